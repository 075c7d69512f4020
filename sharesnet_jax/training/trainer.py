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
from sharesnet_jax.training.preemption import PreemptionWatch, SetUpInterrupted
from sharesnet_jax.training.run_record import RunRecord
from sharesnet_jax.training.run_setup import Plan, Run, build_run, load_dataset_info
from sharesnet_jax.training.steps import TrainState, create_replicated_state
from sharesnet_jax.training.workdir_lock import WorkdirLock


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; nothing non-finite was checkpointed."""


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
                            interrupted.step + 1)
            return {"step": interrupted.step, "preempted": True}


def _train_and_evaluate(config, workdir: str, preemption: PreemptionWatch,
                        start_time: float) -> dict[str, Any]:
    # TensorBoard's writer needs TF: seconds to import, before the first look for a signal.
    from clu import metric_writers

    # ---- Set-up: the dataset, model, mesh and jitted steps the config describes.
    preemption.stop_during_set_up(step=0)
    info = load_dataset_info(config)
    run = build_run(config, info)
    validation.check_plan(config, info, run.plan)
    _warn_of_known_compiler_crash()
    preemption.stop_during_set_up(step=0)
    _log_mesh(config, run)

    # ---- Restore: the newest checkpoint, else the weights of init_from, else a fresh state.
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
    state = _restored_or_initial_state(config, run, info, checkpoints)
    start_step = int(state.step)
    preemption.stop_during_set_up(step=start_step)
    writer = metric_writers.create_default_writer(workdir, just_logging=not _is_chief())
    _log_start(config, state, writer)

    # ---- Train and evaluate (or only evaluate); a preempted run ends with its checkpoint.
    try:
        state, step, final = _train(config, run, info, state, checkpoints, writer, preemption)
    finally:
        # ---- Finish: the one end of a run, finished, preempted or stopped by an error: the
        # checkpoint being written completes, and the events written so far reach the disk.
        checkpoints.wait()
        checkpoints.close()
        writer.flush()
    if final is None:
        logging.warning("Preempted: checkpoint at step %d written; exiting. Rerun the same "
                        "command to resume.", step)
        return {"step": step, "preempted": True}
    num_params = count_params(state.params)
    results = {"step": step,
               "steps_run": step - start_step,  # by this process: a resume runs only the rest
               **{k: final[k] for k in ("eval_accuracy", "eval_top5_accuracy", "eval_loss",
                                        "eval_examples")},
               "num_params": num_params,
               "params_fingerprint": params_fingerprint(state.params, state.batch_stats),
               "wall_seconds": round(time.time() - start_time, 2)}
    if _is_chief():
        _write_results(workdir, results)
    logging.info("Final: step %d, eval accuracy %.4f (top-5 %.4f), %s parameters, %.1f s",
                 step, results["eval_accuracy"], results["eval_top5_accuracy"],
                 f"{num_params:,}", results["wall_seconds"])
    return results


def _train(config, run: Run, info: DatasetInfo, state: TrainState, checkpoints: Checkpoints,
           writer, preemption: PreemptionWatch) -> tuple[TrainState, int, dict | None]:
    """The loop, from the restored step to the last: the state, its step and the final
    evaluation (None: preempted, after checkpointing the step reached). Evaluates every
    `eval_every_steps` and at the end; checkpoints every `checkpoint_every_steps`, at the end
    and on a signal; fetches the train metrics only at logs and checkpoints."""
    from clu import periodic_actions

    plan, mesh = run.plan, run.mesh
    stored_record = RunRecord.of_run(config, info, jax.device_count(),
                                     jax.process_count()).to_json()
    report_progress = periodic_actions.ReportProgress(num_train_steps=plan.total_steps,
                                                      writer=writer)

    def run_eval(step: int) -> dict[str, float]:
        logging.info("Evaluating at step %d", step)
        metrics = evaluate(run.eval_step, state, eval_batches(config, info, mesh, plan))
        writer.write_scalars(step, {k: v for k, v in metrics.items() if k != "eval_examples"})
        logging.info("step %d: eval loss %.4f, top-1 %.4f, top-5 %.4f over %d examples", step,
                     metrics["eval_loss"], metrics["eval_accuracy"],
                     metrics["eval_top5_accuracy"], metrics["eval_examples"])
        return metrics

    def save(step: int) -> None:
        logging.info("Saving checkpoint at step %d", step)
        checkpoints.save(step, state, stored_record)

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
    if config.eval_only:
        return state, step, run_eval(step)
    final = None
    pending: list[tuple[int, dict]] = []  # per-step metrics on the device, fetched at logs
    skipped = 0
    train_step, batches = run.train_step, train_batches(config, info, mesh, start_step=step)
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
        if step == plan.total_steps and skipped == step - start_step:
            raise TrainingDiverged(
                f"every one of the {skipped} steps of this run had a non-finite loss or "
                "update and was skipped: the model did not train and no results were "
                "written. Lower the learning rate")
        if preempted:
            save(step)
            return state, step, None
        if step % plan.eval_every_steps == 0 or step == plan.total_steps:
            final = run_eval_or_save(step)
        if checkpoint_now:
            save(step)
    if skipped:
        logging.warning("%d steps had a non-finite loss and were skipped", skipped)
    return state, step, final or run_eval(step)


def _is_chief() -> bool:
    """Process 0 writes what one copy suffices of: results, TensorBoard events, the overview."""
    return jax.process_index() == 0


def _log_mesh(config, run: Run) -> None:
    logging.info("Mesh %s over %d process(es) (device ids by process: %s); global batch %d, "
                 "%d per process; %d steps (%d per epoch)", dict(run.mesh.shape),
                 jax.process_count(), sharding.devices_by_process(run.mesh), config.batch_size,
                 config.batch_size // jax.process_count(), run.plan.total_steps,
                 run.plan.steps_per_epoch)


def _restored_or_initial_state(config, run: Run, info: DatasetInfo,
                               checkpoints: Checkpoints) -> TrainState:
    """The state of the newest checkpoint that restores (its record's config checked against
    this one), else the fresh state with the weights of `config.init_from`, else the fresh
    state of `config.seed`."""
    state = create_replicated_state(run.model, run.tx, config.seed, info.image_shape, run.mesh)
    stored_records: list[RunRecord] = []

    def check_record(record: RunRecord) -> None:
        validation.check_resume(record.config, config,
                                f"the checkpoint in {checkpoints.directory}")
        stored_records.append(record)

    restored = checkpoints.restore_latest(state, check_record)
    if restored is None and config.eval_only:
        raise UserError(f"eval_only=True but {checkpoints.directory} holds no checkpoint")
    if restored is None:
        return _warm_start(config, run, state) if config.init_from else state
    step, state = restored
    if int(state.step) != step:
        raise UserError(f"{checkpoints.directory}/{step} holds the state of step "
                        f"{int(state.step)}: the step directory was renamed; rename it back "
                        f"to {int(state.step)} (or move it away) and rerun")
    logging.info("Resumed from checkpoint at step %d", step)
    _warn_of_another_device_count(stored_records[-1])
    if step > run.plan.total_steps and not config.eval_only:
        raise UserError(f"{checkpoints.directory} holds step {step}, past this run's "
                        f"{run.plan.total_steps} steps: raise num_train_steps/num_epochs, or "
                        "use --config.eval_only=True to evaluate it")
    return state


def _log_start(config, state: TrainState, writer) -> None:
    """A fresh run logs its parameter overview and hyperparameters; every run its size."""
    from clu import parameter_overview

    if int(state.step) == 0:
        if _is_chief():
            # Host copies: statistics of global arrays computed on one process alone would
            # be a computation the other processes never join.
            parameter_overview.log_parameter_overview(jax.device_get(state.params))
        writer.write_hparams({k: v for k, v in config.to_dict().items()
                              if isinstance(v, (int, float, str, bool))})
    logging.info("Model %s: %s parameters", config.model, f"{count_params(state.params):,}")


def _write_results(workdir: str, results: dict[str, Any]) -> None:
    try:
        safe_files.write_atomically(os.path.join(workdir, "results.json"),
                                    json.dumps(results, indent=2))
    except OSError as err:
        reason = "disk full" if err.errno == 28 else (err.strerror or str(err))
        raise UserError(f"cannot write {workdir}/results.json ({reason}); the checkpoint "
                        f"of step {results['step']} holds the trained model") from None


def _warn_of_another_device_count(record: RunRecord) -> None:
    """A checkpoint resumed on another number of devices or processes trains on correctly, but
    the examples each process loads and the order of the gradient sums change: say so in one
    line, since the result will not be bit-identical to an uninterrupted run's."""
    before = (record.num_devices, record.num_processes)
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


def _warm_start(config, run: Run, state: TrainState) -> TrainState:
    """The fresh state with the variables of `config.init_from` and a new optimizer state."""
    from sharesnet_jax.training import warm_start

    replicated, tx = sharding.replicated(run.mesh), run.tx
    variables = warm_start.initial_variables(
        config.init_from, config.model, run.model,
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
