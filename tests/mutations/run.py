"""Mutation harness: plants known one-line bugs and checks that the named tests catch each one.

    python tests/mutations/run.py                 # every mutation, then the table
    python tests/mutations/run.py --only NAME     # one (repeatable)
    python tests/mutations/run.py --list          # the mutations and their tests
    python tests/mutations/run.py --baseline      # also run each selection unmutated first

For each mutation the repository (package, tests, configs, pyproject) is copied to a temporary
directory, ONE line is replaced there, and pytest runs the mutation's test selection with that
directory as cwd (so the copy is imported, also by tests that start subprocesses). A failing
run means the mutation was caught. A mutation whose original line is not found exactly once is
reported as "stale" (the code moved on: update the line here), a selection naming a test file
that does not exist as "test file missing"; neither is silently skipped. The working tree is
never modified. Not collected by pytest (this folder holds no test_*.py files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
COPIED = ("sharesnet_jax", "tests", "configs", "benchmarks", "colab", ".ci", "pyproject.toml", "README.md",
          "constraints.txt")


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository
    original: str  # the line, compared without its leading/trailing whitespace
    replacement: str  # put in with the original line's indentation
    tests: tuple[str, ...]  # pytest arguments: files, file::test ids, -k expressions
    why: str = ""


LAYERS = "sharesnet_jax/models/layers.py"
INIT = "sharesnet_jax/models/initialization.py"
TRAINER = "sharesnet_jax/training/trainer.py"
STEPS = "sharesnet_jax/training/steps.py"
PIPELINE = "sharesnet_jax/data/pipeline.py"
PLANNER = "sharesnet_jax/training/tpu/plan.py"
SAFE_FILES = "sharesnet_jax/safe_files.py"
VALIDATION = "sharesnet_jax/training/validation.py"
SOURCES = "sharesnet_jax/data/sources.py"
LOCK = "sharesnet_jax/training/workdir_lock.py"
PREDICT = "sharesnet_jax/predict.py"
ROUND3 = "tests/training/test_reliability_round3.py"

MUTATIONS = [
    Mutation(
        "scan_init_params_rng_not_split", LAYERS,
        'split_rngs={"params": True, "dropout": True},',
        'split_rngs={"params": False, "dropout": True},',
        ("tests/models/test_scan.py",),
        "blocks 2..n of a scanned stage start from identical weights"),
    Mutation(
        "remat_ignored", LAYERS,
        "if self.remat:",
        "if False:",
        ("tests/models/test_scan.py",),
        "remat=True silently does nothing"),
    Mutation(
        "unshare_block2_3x3", LAYERS,
        "x, train, kernel if slots_per_block[index] else None)",
        "x, train, kernel if slots_per_block[index] and index != 1 else None)",
        ("tests/models/test_models.py", "-k", "exact_parameter_counts or distinct_3x3"),
        "block 2 of each stage gets its own 3x3 instead of the shared one (loop impl)"),
    Mutation(
        "conv_init_changed", INIT,
        'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_in", "normal"),',
        'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),',
        ("tests/models/test_init.py",),
        "the CIFAR nets' conv init uses fan_out (fb.resnet.torch's) instead of the WRN code's fan_in"),
    Mutation(
        "bn_scale_init_changed", INIT,
        "norm_scale=nn.initializers.uniform(scale=1.0),  # U(0, 1)",
        "norm_scale=nn.initializers.ones,",
        ("tests/models/test_init.py",),
        "the CIFAR nets' BatchNorm scales start at 1 instead of Torch's U(0, 1)"),
    Mutation(
        "bn_epsilon", LAYERS,
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,",
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=dtype,",
        ("tests/training/test_steps.py",),
        "BatchNorm epsilon 1e-3 instead of Torch's 1e-5"),
    Mutation(
        "bn_momentum", LAYERS,
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,",
        "options = dict(use_running_average=not train, momentum=0.99, epsilon=1e-5, dtype=dtype,",
        ("tests/training/test_steps.py",),
        "running averages move 10x slower than the paper's"),
    Mutation(
        "bn_groups_span_the_batch", "sharesnet_jax/models/batch_norm.py",
        "axes = tuple(range(1, groups.ndim - 1))",
        "axes = tuple(range(0, groups.ndim - 1))",
        ("tests/models/test_batch_norm.py",),
        "bn_group_size statistics taken over the whole batch instead of each group"),
    Mutation(
        "colour_jitter_fixed_order", "sharesnet_jax/data/augment.py",
        "order = tf.argsort(tf.random.stateless_uniform([3], order_key))",
        "order = tf.range(3)",
        ("tests/data/test_augment.py",),
        "brightness, contrast, saturation always in one order (fb.resnet.torch draws one per image)"),
    Mutation(
        "shuffle_buffer_not_full", PIPELINE,
        "int(config.shuffle_buffer) or info.num_train_examples,",
        "int(config.shuffle_buffer) or 64,",
        ("tests/data/test_pipeline.py", "-k", "full_permutation"),
        "each epoch a 64-example shuffle buffer instead of a full permutation"),
    Mutation(
        "bn_update_dropped", STEPS,
        "new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,",
        "new_state = state.replace(step=state.step + 1, params=params, batch_stats=state.batch_stats,",
        ("tests/training/test_steps.py",),
        "the train step never stores the updated BatchNorm statistics"),
    Mutation(
        "nonfinite_params_unchecked", STEPS,
        "& jnp.isfinite(optax.global_norm((params, batch_stats))))",
        ")",
        ("tests/training/test_fault_tolerance.py", "-k", "nonfinite"),
        "a finite loss with non-finite new parameters passes the check"),
    Mutation(
        "checkpoint_before_nonfinite_check", TRAINER,
        "if step % config.log_every_steps == 0 or checkpoint_now:",
        "if step % config.log_every_steps == 0:",
        ("tests/training/test_fault_tolerance.py", "-k", "nonfinite"),
        "a checkpoint is written before the step's metrics are checked"),
    Mutation(
        "every_process_reads_share_0", TRAINER,
        "start_step=start_step, process_index=jax.process_index(),",
        "start_step=start_step, process_index=0,",
        ("tests/training/test_multihost.py", "-k", "reads_this_processs_share"),
        "every process trains on process 0's share of the data"),
    Mutation(
        "resume_restarts_from_step_0", TRAINER,
        "state = restored[1]",
        "state = state",
        ("tests/training/test_trainer.py", "-k", "restarted"),
        "a run 'resumes' (and says so) but trains from step 0 again"),
    Mutation(
        "resume_restarts_from_step_0_cli", TRAINER,
        "state = restored[1]",
        "state = state",
        ("tests/training/test_fault_tolerance.py", "-k", "sigterm or unreadable"),
        "the same, seen by the command-line resume tests (SIGTERM, unreadable checkpoint)"),
    Mutation(
        "data_restarts_at_step_0_after_resume", TRAINER,
        "batches = train_batches(config, info, mesh, start_step=step)",
        "batches = train_batches(config, info, mesh, start_step=0)",
        ("tests/training/test_trainer.py", "-k", "restarted"),
        "a resumed run replays the data from the first batch"),
    Mutation(
        "pipeline_resume_position_lost", PIPELINE,
        "first_example=step_in_epoch * local_batch_size,",
        "first_example=0,",
        ("tests/data/test_pipeline.py", "tests/data/test_shares.py", "-k", "resume"),
        "the pipeline restarts the epoch instead of continuing within it"),
    Mutation(
        "pipeline_train_share_ignored", PIPELINE,
        "source, sources.train_split(config), process_index=process_index, process_count=process_count,",
        "source, sources.train_split(config), process_index=0, process_count=process_count,",
        ("tests/data/test_shares.py",),
        "the pipeline reads process 0's training share on every process"),
    Mutation(
        "planner_known_crash_unguarded", PLANNER,
        "refuse_known_compiler_crash(tpu.chip.generation)",
        "pass",
        ("tests/training/test_tpu_plan.py", "-k", "v6e_scan"),
        "the planner compiles for a generation its libtpu is known to crash on (a segfault)"),
    Mutation(
        "trainer_known_crash_unwarned", TRAINER,
        "_warn_of_known_compiler_crash()",
        "pass",
        ("tests/training/test_tpu_plan.py", "-k", "trainer_warns_of_a_known"),
        "the trainer compiles, on a real v6e, with a libtpu known to crash there, unannounced"),
    Mutation(
        "planner_bn_groups_unchecked", PLANNER,
        "validation.check_bn_groups(config, tpu.chips)",
        "pass",
        ("tests/training/test_tpu_plan.py", "-k", "bn_groups"),
        "the planner checks BatchNorm groups against this machine's devices, not the slice's"),
    # Issue 22 (reliability round 3).
    Mutation(
        "lock_follows_links", SAFE_FILES,
        "fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)",
        "fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)",
        (ROUND3, "-k", "link_where_the_run_writes"),
        "the lock is opened through a link planted at .lock and truncates its target"),
    Mutation(
        "results_through_fixed_temporary", TRAINER,
        'legacy=("results.json.tmp",))',
        "legacy=())",
        (ROUND3, "-k", "stale_temporaries"),
        "a link left at the old fixed temporary name survives the run"),
    Mutation(
        "checkpoints_link_followed", VALIDATION,
        "safe_files.refuse_link_or_file(os.path.join(workdir, name))",
        "pass",
        (ROUND3, "-k", "link_where_the_run_writes"),
        "checkpoints/ as a link: Orbax writes (and prunes) in another user's directory"),
    Mutation(
        "none_field_accepted", VALIDATION,
        "if default is None:",
        "if True:",
        (ROUND3, "-k", "every_field_is_typed and None"),
        "a None in a Python config file passes and fails later with a traceback"),
    Mutation(
        "seed_unbounded", VALIDATION,
        "if not 0 <= config.seed <= MAX_SEED:",
        "if False:",
        (ROUND3, "-k", "every_field_is_typed and seed"),
        "a seed beyond 64 bits (or one that wraps onto another) is accepted"),
    Mutation(
        "decay_factor_above_one", VALIDATION,
        '_check_range(config, "lr_decay_factor", 0.0, 1.0, low_open=True)',
        '_check_range(config, "lr_decay_factor", 0.0)',
        (ROUND3, "-k", "every_field_is_typed and lr_decay_factor"),
        "a decay factor above 1 (or 0) is accepted"),
    Mutation(
        "empty_eval_split_accepted", VALIDATION,
        "if info.num_eval_examples < 1:",
        "if False:",
        (ROUND3, "-k", "data_problems and empty"),
        "an evaluation split of no examples fails only after training"),
    Mutation(
        "split_files_unchecked", SOURCES,
        "check_split_files(source, split)",
        "pass",
        (ROUND3, "-k", "data_problems and eval and file"),
        "a truncated, missing or FIFO evaluation file is found after training"),
    Mutation(
        "failed_eval_loses_steps", TRAINER,
        "final = run_eval_or_save(step)",
        "final = run_eval(step)",
        (ROUND3, "-k", "evaluation_that_fails"),
        "an evaluation that fails loses the steps since the last checkpoint"),
    Mutation(
        "lock_names_dead_holder", LOCK,
        "if text and _alive(text):",
        "if text:",
        (ROUND3, "-k", "dead_holder"),
        "a refusal names a holder that is no longer alive"),
    Mutation(
        "predict_opens_fifo_blocking", PREDICT,
        "fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)",
        "fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)",
        (ROUND3, "-k", "predict_refuses_special"),
        "predict on a FIFO blocks forever"),
    Mutation(
        "predict_bomb_unchecked", PREDICT,
        "if width * height > MAX_PIXELS:",
        "if False:",
        (ROUND3, "-k", "predict_refuses_special"),
        "an image of 121 megapixels is decoded (PIL only warns below twice its limit)"),
    Mutation(
        "renamed_step_resumed", TRAINER,
        "if int(state.step) != restored[0]:",
        "if False:",
        (ROUND3, "-k", "renamed_step"),
        "a step directory renamed to another number resumes with a wrong step"),
    Mutation(
        "workdir_root_accepted", VALIDATION,
        "if os.path.dirname(path) == path:",
        "if False:",
        (ROUND3, "-k", "filesystem_root"),
        "--workdir=/ is accepted"),
]


def copy_repository(destination: pathlib.Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, destination / name)


def apply(mutation: Mutation, root: pathlib.Path) -> str | None:
    """Replaces the line in the copy; returns None, or why it could not ("stale ...")."""
    path = root / mutation.file
    if not path.exists():
        return f"stale: {mutation.file} does not exist"
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == mutation.original.strip()]
    if len(hits) != 1:
        return f"stale: original line found {len(hits)} times in {mutation.file}"
    line = lines[hits[0]]
    indent = line[:len(line) - len(line.lstrip())]
    lines[hits[0]] = indent + mutation.replacement.strip() + "\n"
    path.write_text("".join(lines))
    return None


def missing_test_files(mutation: Mutation, root: pathlib.Path) -> list[str]:
    files, skip_next = [], False
    for argument in mutation.tests:
        if skip_next:
            skip_next = False
            continue
        if argument in ("-k", "-m"):
            skip_next = True
            continue
        if argument.startswith("-"):
            continue
        if not (root / argument.split("::")[0]).exists():
            files.append(argument)
    return files


def run_pytest(root: pathlib.Path, arguments: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               *arguments]
    try:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        return -1, output if isinstance(output, str) else output.decode(errors="replace")
    return result.returncode, result.stdout + result.stderr


def imported_from(root: pathlib.Path) -> str:
    result = subprocess.run([sys.executable, "-c", "import sharesnet_jax; print(sharesnet_jax.__file__)"],
                            cwd=root, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    return result.stdout.strip()


def failed_tests(output: str) -> list[str]:
    names = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)
    return [n.split("::", 1)[-1] for n in names]


def verdict(rc: int, output: str) -> str:
    if rc == 0:
        return "MISSED"
    if rc == -1:
        return "timeout"
    if rc == 5:
        return "no tests selected"
    if rc == 1:
        return "caught"
    return f"caught (pytest rc {rc})"


def run_one(mutation: Mutation, timeout: float, baseline: bool, keep: bool) -> dict:
    started = time.monotonic()
    row = {"name": mutation.name, "tests": " ".join(mutation.tests), "by": ""}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"mutation_{mutation.name}_"))
    try:
        copy_repository(workdir)
        missing = missing_test_files(mutation, workdir)
        if missing:
            row["result"] = f"test file missing: {', '.join(missing)}"
            return row
        if baseline:
            rc, output = run_pytest(workdir, mutation.tests, timeout)
            if rc != 0:
                row["result"] = f"baseline fails (rc {rc}): {', '.join(failed_tests(output))}"
                row["output"] = output
                return row
        problem = apply(mutation, workdir)
        if problem:
            row["result"] = problem
            return row
        where = imported_from(workdir)
        if not where.startswith(str(workdir)):
            row["result"] = f"error: the copy is not imported ({where})"
            return row
        rc, output = run_pytest(workdir, mutation.tests, timeout)
        row["result"] = verdict(rc, output)
        row["by"] = ", ".join(failed_tests(output))
        row["output"] = output
        return row
    finally:
        row["seconds"] = time.monotonic() - started
        if keep:
            row["copy"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only this mutation")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="first check that each selection passes unmutated")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output tails")
    args = parser.parse_args(argv)

    names = {m.name for m in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(names)}")
    selected = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in selected:
            print(f"{m.name}: {m.file}: {m.why}\n    tests: {' '.join(m.tests)}")
        return 0

    rows = []
    for mutation in selected:
        print(f"... {mutation.name} ({' '.join(mutation.tests)})", file=sys.stderr, flush=True)
        row = run_one(mutation, args.timeout, args.baseline, args.keep)
        rows.append(row)
        print(f"    {row['result']} in {row['seconds']:.0f} s {row['by']}", file=sys.stderr,
              flush=True)
        if args.verbose and "output" in row:
            print(row["output"][-3000:], file=sys.stderr)

    print("| mutation | tests | result | caught by | time (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['tests']} | {row['result']} | {row['by']} | "
              f"{row['seconds']:.0f} |")
    bad = [r for r in rows if r["result"] != "caught" and not r["result"].startswith("caught")]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutations caught", end="")
    print(f"; not caught: {', '.join(r['name'] + ' (' + r['result'] + ')' for r in bad)}"
          if bad else "")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
