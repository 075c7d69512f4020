"""Orbax checkpoints of the train state, with a JSON record of the run beside each one.

Saves are asynchronous (training continues while the state is written); Orbax commits each step
directory atomically and removes old steps only after a newer one is committed, so a crash
mid-save never costs the last good checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from sharesnet_jax.errors import UserError, first_line
from sharesnet_jax.models import to_loop_layout
from sharesnet_jax.training.run_record import RunRecord


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (read-only or immutable directory, disk full)."""


def write_failure(directory: str, step: int, err: BaseException) -> CheckpointWriteError:
    """One line naming the cause found in `err`'s chain (the OSError Orbax's threads hit)."""
    cause, seen, texts = err, set(), []
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
        seen.add(id(cause))
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    # TensorStore reports a full disk as RESOURCE_EXHAUSTED ... No space left on device.
    full = (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) or any(
        "No space left on device" in text or "RESOURCE_EXHAUSTED" in text for text in texts)
    if full:
        reason = "disk full (no space left on device)"
    elif isinstance(cause, OSError):
        reason = f"{cause.strerror or type(cause).__name__}" + (
            f": {cause.filename}" if cause.filename else "")
    else:
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"
    return CheckpointWriteError(
        f"cannot write the checkpoint of step {step} to {directory} ({reason}); the run stopped "
        "and earlier checkpoints are untouched: fix the directory (permissions, space) and rerun "
        "the same command to resume")


class Checkpoints:
    def __init__(self, directory: str, *, max_to_keep: int = 3, asynchronous: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True)
        self._pending = -1  # the step of the newest save started
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "record": ocp.JsonCheckpointHandler()})

    @property
    def pending_step(self) -> int:
        """The step of the newest save started (-1: none yet)."""
        return self._pending

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, stored_record: dict) -> None:
        """Starts an asynchronous save of `state` with `stored_record` (a `RunRecord.to_json()`,
        serialised once by the caller for all its saves) beside it; a failure of it (or of the
        previous one, which Orbax reports here) is a `CheckpointWriteError`."""
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(stored_record)),
                force=True)
        except Exception as err:  # noqa: BLE001 - Orbax wraps the OSError of its threads
            # Orbax reports the failure of the previous (asynchronous) save here, if any.
            raise write_failure(self.directory, self._pending if self._pending >= 0 else step,
                                err) from None
        self._pending = step

    def record(self, step: int) -> RunRecord:
        stored = self._manager.restore(step, args=ocp.args.Composite(
            record=ocp.args.JsonRestore()))["record"]
        return RunRecord.from_json(stored, record_file(os.path.join(self.directory, str(step))))

    def restore(self, step: int, target: Any,
                check_record: Callable[[RunRecord], None] | None = None) -> Any:
        """Restores onto `target` (arrays or ShapeDtypeStructs carrying shardings), so optax
        states keep their types and arrays land directly on the mesh. `check_record` sees the
        record stored beside the checkpoint first and raises a UserError when the checkpoint,
        though readable, belongs to another config."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            self._check_shapes(step, abstract)
            shape_error = None
        except UserError as err:
            shape_error = err
        if check_record is not None:
            try:
                record = self.record(step)
            except Exception:  # noqa: BLE001 - an unreadable record: the shapes decide
                if shape_error is not None:
                    raise shape_error from None
                raise
            try:
                check_record(record)
            except UserError as err:  # both: the differing shape and the differing fields
                raise UserError(f"{shape_error}; {err}" if shape_error else str(err)) from None
        if shape_error is not None:
            raise shape_error
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        return restored["state"]

    def restore_latest(self, target: Any,
                       check_record: Callable[[RunRecord], None] | None = None
                       ) -> tuple[int, Any] | None:
        """The newest checkpoint that restores. Newer unreadable ones (truncated or missing
        files, killed mid-save) are moved aside to `<directory>.skipped/` with a warning: kept
        for inspection, and out of the way of the saves that will redo their steps. Every
        process reads the checkpoint; one that fails anywhere is skipped everywhere. A readable
        checkpoint of another model or config is a UserError, and nothing is moved."""
        for step in reversed(self.steps()):
            try:
                restored, reason = self.restore(step, target, check_record), None
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped
                restored = None
                reason = f"{type(err).__name__}: {first_line(err)}"
            if _on_every_process(reason is None):
                return step, restored
            self._set_aside(step, reason or "unreadable on another process")
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        skipped = f"{self.directory}.skipped"
        destination = os.path.join(skipped, f"{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.makedirs(skipped, exist_ok=True)
            os.replace(os.path.join(self.directory, str(step)), destination)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()
        logging.warning("Skipped unreadable checkpoint %s/%d (%s); moved it to %s",
                        self.directory, step, reason, destination)

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def _check_shapes(self, step: int, abstract: Any) -> None:
        """A checkpoint of another model is a one-line error naming the first differing path."""
        check_same_shapes(self._manager.item_metadata(step)["state"], abstract,
                          f"checkpoint {self.directory}/{step}", "this model")

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - the failure of the save in flight
            raise write_failure(self.directory, self._pending, err) from None

    def close(self) -> None:
        try:
            self._manager.close()
        except Exception as err:  # noqa: BLE001 - the failure of the save in flight
            raise write_failure(self.directory, self._pending, err) from None


def check_same_shapes(stored: Any, needed: Any, where: str, needer: str) -> None:
    """The params and batch_stats of `stored` have the paths and shapes `needed` has; else a
    one-line UserError naming the first path that differs (`where` holds it, `needer` wants)."""
    stored, needed = _shapes_by_path(stored), _shapes_by_path(needed)
    for path, shape in needed.items():
        if not path.startswith(("params/", "batch_stats/")):
            continue
        if path not in stored:
            raise UserError(f"{where} has no entry {path}: it was written by a different model "
                            "or config")
        if stored[path] != shape:
            raise UserError(f"{where} holds {path} with shape {stored[path]}, {needer} needs "
                            f"{shape}: it was written by a different model or config")


def step_directories(source: str) -> list[str]:
    """A workdir, its checkpoints/ folder or one step folder -> its step folders, newest first."""
    for candidate in (os.path.join(source, "checkpoints"), source):
        steps = [int(n) for n in os.listdir(candidate) if n.isdigit()] if os.path.isdir(
            candidate) else []
        if steps:
            return [os.path.join(candidate, str(step)) for step in sorted(steps, reverse=True)]
    if os.path.isdir(os.path.join(source, "state")):
        return [source]
    raise UserError(f"{source!r} holds no checkpoint: it is neither a training workdir, its "
                    "checkpoints directory nor one step directory of this trainer")


def record_file(step_dir: str) -> str:
    """The JSON file of the record in a step folder (the name Orbax's JSON handler gives it)."""
    return os.path.join(step_dir, "record", "metadata")


def read_checkpoint(source: str) -> tuple[RunRecord, dict]:
    """(record, variables) of the newest readable checkpoint under `source`, variables in loop
    layout. An unreadable newest one (truncated files) is passed over with a warning.

    Read without a target: warm starts and prediction need only params and batch_stats, so
    the optimizer state's types do not matter here (the trainer's own resume uses `restore`).
    """
    failures = []
    for step_dir in step_directories(source):
        try:
            stored = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
                os.path.join(step_dir, "record"))
            state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
            variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        except Exception as err:  # noqa: BLE001 - any unreadable source is the user's to fix
            failures.append(f"{step_dir} ({type(err).__name__}: "
                            f"{(str(err).strip().splitlines() or [''])[0][:160]})")
            continue
        if failures:
            logging.warning("Passed over unreadable checkpoint(s) %s; using %s",
                            "; ".join(failures), step_dir)
        # Which checkpoint was read: export records it.
        record = RunRecord.from_json(stored, record_file(step_dir), os.path.abspath(step_dir))
        if record.config["stage_impl"] == "scan":
            variables = to_loop_layout(variables)
        return record, variables
    raise UserError(f"cannot read the checkpoint {failures[0]}" + (
        f" nor {len(failures) - 1} older one(s)" if len(failures) > 1 else ""))


def _on_every_process(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
    """'params/stage1/block1/conv1/kernel' -> shape, for saved metadata and live trees alike."""
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}
