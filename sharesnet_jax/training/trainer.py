"""The training loop: `train_and_evaluate(config, workdir)`, called by `main`, Colab and tests.

One jitted train step over a 1-D data mesh spanning every device of every process; tf.data/TFDS
input (or on-device synthetic data); Orbax checkpoints with exact resume; clu metric writers.
A run is a pure function of (config, seed): data order and every random key derive from
(seed, step), so a run killed anywhere and restarted ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from sharesnet_jax import safe_files
from sharesnet_jax.data import synthetic
from sharesnet_jax.data.info import DatasetInfo
from sharesnet_jax.errors import UserError
from sharesnet_jax.models.stats import count_params
from sharesnet_jax.training import sharding, validation
from sharesnet_jax.training.checkpoints import Checkpoints
from sharesnet_jax.training.preemption import PreemptionWatch
from sharesnet_jax.training.run_setup import Plan, build_run, load_dataset_info
from sharesnet_jax.training.steps import TrainState, create_replicated_state
from sharesnet_jax.training.workdir_lock import WorkdirLock


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; nothing non-finite was checkpointed."""


class SetUpInterrupted(Exception):
    """SIGTERM/SIGINT arrived before the first step: nothing to checkpoint, a clean exit."""


def train_batches(config, info: DatasetInfo, mesh, start_step: int) -> Iterator[dict]:
    if info.name == synthetic.NAME:
        return synthetic.synthetic_batches(info, sharding.batch_sharded(mesh), config.batch_size,
                                           config.seed)
    from sharesnet_jax.data import checks, pipeline

    batches = pipeline.train_batches(
        info.source, info, split=config.train_split, seed=config.seed,
        local_batch_size=config.batch_size // jax.process_count(),
        start_step=start_step, process_index=jax.process_index(),
        process_count=jax.process_count(), shuffle_buffer=config.shuffle_buffer,
        color_jitter=config.color_jitter, pca_lighting=config.pca_lighting)
    return sharding.prefetch_to_mesh(
        checks.checked_batches(iter(batches), info, config.data_dir, start_step), mesh)


def eval_batches(config, info: DatasetInfo, mesh, plan: Plan) -> Iterator[dict]:
    if info.name == synthetic.NAME:
        batch = synthetic.synthetic_batch(info, sharding.batch_sharded(mesh),
                                          config.eval_batch_size, config.seed + 1)
        return iter([batch] * plan.eval_batches)
    from sharesnet_jax.data import checks, pipeline

    batches = pipeline.eval_batches(
        info.source, info, split=config.eval_split,
        local_batch_size=config.eval_batch_size // jax.process_count(),
        process_index=jax.process_index(), process_count=jax.process_count())
    return sharding.prefetch_to_mesh(checks.checked_batches(iter(batches), info,
                                                            config.data_dir), mesh)


def evaluate(eval_step, state: TrainState, batches: Iterator[dict]) -> dict[str, float]:
    """Loss, top-1 and top-5 over the whole split; sums stay on the device until the end."""
    totals = None
    for batch in batches:
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    return {
        "eval_loss": float(totals["loss"]) / count,
        "eval_accuracy": float(totals["correct"]) / count,
        "eval_top5_accuracy": float(totals["correct_top5"]) / count,
        "eval_examples": int(totals["count"]),
    }


def params_fingerprint(params: Any, batch_stats: Any) -> str:
    """sha256 over the bytes of every parameter and statistic, in tree order: equal fingerprints
    mean bit-identical models, so runs can be compared without loading their checkpoints."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get((params, batch_stats))):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Trains (resuming from the newest checkpoint in `workdir`) and returns the final metrics,
    which `WORKDIR/results.json` also holds. On SIGTERM/SIGINT it checkpoints the current step
    and returns {'step': ..., 'preempted': True} without writing results (a signal during the
    set-up, before the first step, has nothing to checkpoint and returns at once). The workdir
    is locked for the run: a second run on it is a UserError naming the holder."""
    start_time = time.time()
    validation.check_config(config)
    workdir = validation.check_workdir(workdir)
    validation.check_results_path(workdir)
    validation.check_workdir_entries(workdir)
    with PreemptionWatch() as preemption, WorkdirLock(workdir, jax.process_index()):
        if jax.process_index() == 0:
            safe_files.remove_stale_temporaries(os.path.join(workdir, "results.json"),
                                                legacy=("results.json.tmp",))
        try:
            return _train_and_evaluate(config, workdir, preemption, start_time)
        except SetUpInterrupted as interrupted:
            logging.warning("Stopped by a signal during set-up, before step %s: nothing to "
                            "checkpoint; rerun the same command to start or resume.",
                            interrupted.args[0] + 1)
            return {"step": interrupted.args[0], "preempted": True}


def _train_and_evaluate(config, workdir: str, preemption: PreemptionWatch,
                        start_time: float) -> dict[str, Any]:
    from clu import metric_writers, parameter_overview, periodic_actions  # TensorBoard: TF.

    is_chief = jax.process_index() == 0
    preemption.stop_during_set_up(SetUpInterrupted(0))

    info = load_dataset_info(config)
    run = build_run(config, info)
    model, plan, mesh, tx = run.model, run.plan, run.mesh, run.tx
    validation.check_plan(config, info, plan)
    _warn_of_known_compiler_crash()
    preemption.stop_during_set_up(SetUpInterrupted(0))
    logging.info("Mesh %s over %d process(es) (device ids by process: %s); global batch %d, "
                 "%d per process; %d steps (%d per epoch)", dict(mesh.shape),
                 jax.process_count(), sharding.devices_by_process(mesh), config.batch_size,
                 config.batch_size // jax.process_count(), plan.total_steps,
                 plan.steps_per_epoch)

    replicated = sharding.replicated(mesh)
    state = create_replicated_state(model, tx, config.seed, info.image_shape, mesh)
    num_params = count_params(state.params)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
    stored_records = []

    def check_record(record: dict) -> None:
        validation.check_resume(record["config"], config,
                                f"the checkpoint in {checkpoints.directory}")
        stored_records.append(record)

    restored = checkpoints.restore_latest(state, check_record)
    if restored is not None:
        state = restored[1]
        if int(state.step) != restored[0]:
            raise UserError(f"{checkpoints.directory}/{restored[0]} holds the state of step "
                            f"{int(state.step)}: the step directory was renamed; rename it back "
                            f"to {int(state.step)} (or move it away) and rerun")
        logging.info("Resumed from checkpoint at step %d", restored[0])
        _warn_of_another_device_count(stored_records[-1] if stored_records else {})
        if restored[0] > plan.total_steps and not config.eval_only:
            raise UserError(f"{checkpoints.directory} holds step {restored[0]}, past this run's "
                            f"{plan.total_steps} steps: raise num_train_steps/num_epochs, or "
                            "use --config.eval_only=True to evaluate it")
    elif config.init_from:
        state = _warm_start(config, model, tx, state, replicated)
    preemption.stop_during_set_up(SetUpInterrupted(int(state.step)))
    record = {"config": config.to_dict(), "num_classes": info.num_classes, "augment": info.augment,
              "image_shape": list(info.image_shape), "mean": list(info.mean),
              "std": list(info.std), "class_names": list(info.class_names),
              "num_devices": jax.device_count(), "num_processes": jax.process_count()}
    train_step, eval_step = run.train_step, run.eval_step

    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    if int(state.step) == 0:
        if is_chief:
            # Host copies: statistics of global arrays computed on one process alone would
            # be a computation the other processes never join.
            parameter_overview.log_parameter_overview(jax.device_get(state.params))
        writer.write_hparams({k: v for k, v in config.to_dict().items()
                              if isinstance(v, (int, float, str, bool))})
    logging.info("Model %s: %s parameters", config.model, f"{num_params:,}")
    report_progress = periodic_actions.ReportProgress(num_train_steps=plan.total_steps,
                                                      writer=writer)

    def run_eval(step: int) -> dict[str, float]:
        logging.info("Evaluating at step %d", step)
        metrics = evaluate(eval_step, state, eval_batches(config, info, mesh, plan))
        writer.write_scalars(step, {k: v for k, v in metrics.items() if k != "eval_examples"})
        logging.info("step %d: eval loss %.4f, top-1 %.4f, top-5 %.4f over %d examples", step,
                     metrics["eval_loss"], metrics["eval_accuracy"],
                     metrics["eval_top5_accuracy"], metrics["eval_examples"])
        return metrics

    def save(step: int) -> None:
        logging.info("Saving checkpoint at step %d", step)
        checkpoints.save(step, state, record)

    def run_eval_or_save(step: int) -> dict[str, float]:
        """An evaluation that fails (its data unreadable) first checkpoints the steps trained
        since the last save: fixing the data and rerunning loses nothing."""
        try:
            return run_eval(step)
        except UserError as err:
            if step not in checkpoints.steps() and step != checkpoints.pending_step:
                save(step)
            checkpoints.wait()
            raise UserError(f"{err}; the state of step {step} is checkpointed: fix it and rerun "
                            "the same command to resume") from None

    step = start_step = int(state.step)
    final = None
    if config.eval_only:
        if restored is None:
            raise UserError(f"eval_only=True but {checkpoints.directory} holds no checkpoint")
        final = run_eval(step)
    else:
        pending: list[tuple[int, dict]] = []  # per-step metrics on the device, fetched at logs
        skipped, first_step = 0, step
        batches = train_batches(config, info, mesh, start_step=step)
        if step < plan.total_steps:
            train_step, batches = _checked_for_device_memory(train_step, state, batches)
        while step < plan.total_steps:
            state, metrics = train_step(state, next(batches))
            step += 1
            pending.append((step, metrics))
            report_progress(step)
            preempted = preemption.requested(step, checkpoints)
            checkpoint_now = (step % config.checkpoint_every_steps == 0
                              or step == plan.total_steps or preempted)
            if step % config.log_every_steps == 0 or checkpoint_now:
                skipped += _log_train_metrics(writer, pending, config.skip_nonfinite)
                pending = []
            if step == plan.total_steps and skipped == step - first_step:
                raise TrainingDiverged(
                    f"every one of the {skipped} steps of this run had a non-finite loss or "
                    "update and was skipped: the model did not train and no results were "
                    "written. Lower the learning rate")
            if preempted:
                save(step)
                checkpoints.wait()
                checkpoints.close()
                writer.flush()
                logging.warning("Preempted: checkpoint at step %d written; exiting. Rerun "
                                "the same command to resume.", step)
                return {"step": step, "preempted": True}
            if step % plan.eval_every_steps == 0 or step == plan.total_steps:
                final = run_eval_or_save(step)
            if checkpoint_now:
                save(step)
        if skipped:
            logging.warning("%d steps had a non-finite loss and were skipped", skipped)
        final = final or run_eval(step)
    checkpoints.wait()
    checkpoints.close()

    results = {"step": step,
               "steps_run": step - start_step,  # by this process: a resume runs only the rest
               **{k: final[k] for k in ("eval_accuracy", "eval_top5_accuracy", "eval_loss",
                                        "eval_examples")},
               "num_params": num_params,
               "params_fingerprint": params_fingerprint(state.params, state.batch_stats),
               "wall_seconds": round(time.time() - start_time, 2)}
    if is_chief:
        try:
            safe_files.write_atomically(os.path.join(workdir, "results.json"),
                                        json.dumps(results, indent=2))
        except OSError as err:
            reason = "disk full" if err.errno == 28 else (err.strerror or str(err))
            raise UserError(f"cannot write {workdir}/results.json ({reason}); the checkpoint "
                            f"of step {step} holds the trained model") from None
    writer.flush()
    logging.info("Final: step %d, eval accuracy %.4f (top-5 %.4f), %s parameters, %.1f s",
                 step, results["eval_accuracy"], results["eval_top5_accuracy"],
                 f"{num_params:,}", results["wall_seconds"])
    return results


def _warn_of_another_device_count(record: dict) -> None:
    """A checkpoint resumed on another number of devices or processes trains on correctly, but
    the examples each process loads and the order of the gradient sums change: say so in one
    line, since the result will not be bit-identical to an uninterrupted run's."""
    before = (record.get("num_devices"), record.get("num_processes"))
    now = (jax.device_count(), jax.process_count())
    if before[0] is not None and before != now:
        logging.warning("Resuming a checkpoint written on %d device(s) in %d process(es) on %d "
                        "device(s) in %d process(es): training continues correctly, but the data "
                        "order and the numerics change, so the result will not be bit-identical "
                        "to an uninterrupted run", *before, *now)


def _warn_of_known_compiler_crash() -> None:
    """On a TPU whose libtpu the planner saw crash compiling our steps for this generation,
    one warning line first: the crash itself (a segmentation fault in the first compile) says
    nothing. Not a refusal: the crash was seen compiling ahead of time, not on the chip."""
    device = jax.local_devices()[0]
    if device.platform != "tpu":
        return
    from sharesnet_jax.training.device_checks import generation_of, known_compiler_crash

    reason = known_compiler_crash(generation_of(device) or "")
    if reason:
        logging.warning("%s; if this run dies in its first compile without a message, that is "
                        "why", reason)


def _checked_for_device_memory(train_step, state: TrainState,
                               batches: Iterator[dict]) -> tuple[Any, Iterator[dict]]:
    """On an accelerator, the step compiled ahead of its first call and checked against the
    device's memory: a config that cannot fit is one line, not an XLA out-of-memory traceback
    after the first step. The compiled executable is then what runs (no second compile). CPUs
    report no memory limit: nothing to check there."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return train_step, batches
    from sharesnet_jax.training.device_checks import check_fits_device

    first = next(batches)
    compiled = train_step.lower(state, first).compile()
    check_fits_device(compiled, device)
    return compiled, itertools.chain([first], batches)


def _warm_start(config, model, tx, state: TrainState, replicated) -> TrainState:
    """The fresh state with the variables of `config.init_from` and a new optimizer state."""
    from sharesnet_jax.training import warm_start

    variables = warm_start.initial_variables(
        config.init_from, config.model, model,
        {"params": state.params, "batch_stats": state.batch_stats})
    variables = jax.device_put(variables, replicated)
    logging.info("Initialised the model from %s", config.init_from)
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                         opt_state=jax.jit(tx.init, out_shardings=replicated)(variables["params"]))


def _log_train_metrics(writer, pending: list[tuple[int, dict]], skip_nonfinite: bool) -> int:
    """Writes the mean train metrics of the steps since the last log and returns how many were
    non-finite (skipped). Without `skip_nonfinite`, a non-finite loss halts the run here, before
    any checkpoint of the diverged state can be written."""
    steps = [s for s, _ in pending]
    fetched = jax.device_get([m for _, m in pending])
    nonfinite = [(s, m) for s, m in zip(steps, fetched) if m["nonfinite"]]
    if nonfinite and not skip_nonfinite:
        bad_step, bad = nonfinite[0]
        raise TrainingDiverged(
            f"non-finite loss or update at step {bad_step} (loss {float(bad['loss']):g}, "
            f"learning rate {float(bad['learning_rate']):g}): training halted before any "
            "checkpoint of it was written. Lower the learning rate, or set "
            "--config.skip_nonfinite=True to skip such steps")
    finite = [m for m in fetched if not m["nonfinite"]] or fetched
    summary = {k: float(np.mean([m[k] for m in finite])) for k in ("loss", "accuracy")}
    summary["learning_rate"] = float(fetched[-1]["learning_rate"])
    writer.write_scalars(steps[-1], {f"train_{k}": v for k, v in summary.items()})
    return len(nonfinite)
