"""Command line: will this config fit, and how fast could it run, on a TPU slice or GPU hosts?

    python -m sharesnet_jax.aot --config=configs/imagenet_sharesnet152.py --topology=v5e:2x4 \
        [--json=PLAN.json] [--config.FIELD=VALUE ...]
    python -m sharesnet_jax.aot --config=configs/imagenet_sharesnet50.py --topology=h100:8

Compiles the trainer's train and eval steps for the named TPU slice (`GENERATION:SHAPE`; needs
the `tpu` extra) or GPUs (`GPU:N` on one host, `GPU:HOSTSxN`; needs the `gpu` extra) on this
machine, with no accelerator, and prints one table: devices and hosts, per-device batch, compile
times, memory per device against what it may use, FLOPs, the all-reduce bytes per step, and
ESTIMATES of step time and of the largest batch. `--json=PATH` writes the same figures as data
(`-`: to stdout, the table then goes to stderr). A config that does not fit exits 1 with one line
saying what would (and its record in the JSON); bad input exits 2 with one line. See
`sharesnet_jax.preflight`.
"""

from __future__ import annotations

import os

# XLA's C++ log, fatal lines only: compiling for absent devices, at batches that may not fit on
# purpose, makes jax 0.12's GPU scheduler log errors about its own memory limits
# ("gpu_hlo_schedule.cc ... exceeds the base limit"), which would bury the one-line verdict.
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
# Compile for TPU or GPU; never look for local ones (the CUDA plugin would fail at cuInit).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# On a machine without TPUs libtpu asks the (absent) Cloud metadata for these and logs two
# warnings and an error. Any valid values silence it; the topology descriptions and the compiled
# programs do not depend on them. Set here, in the CLI only: on a TPU VM the trainer must get the
# real ones from JAX.
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
# Compile times are measured, and executables compiled from a topology cannot be read back
# from JAX's persistent cache anyway (preflight/compile.py).
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharesnet_jax import cli, safe_files  # noqa: E402
from sharesnet_jax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU slice as GENERATION:SHAPE (v5e:2x4, v5p:2x2x1, v6e:2x4, v4:2x2x1) or "
    "GPUs as GPU:N or GPU:HOSTSxN (h100:8, a100-40:1, h200:2x8).")
_EVAL = flags.DEFINE_boolean("eval", True, "Also compile the eval step.")
_FIT_SEARCH = flags.DEFINE_boolean("fit_search", True, "When the step does not fit, compile "
                                   "once more at the batch the failed compile suggests.")
_FAST_COMPILE = flags.DEFINE_boolean(
    "fast_compile", False, "Ask XLA for its least optimisation (O0; faster compiles; the memory "
    "and speed figures are then those of a less optimised program).")
_JSON = flags.DEFINE_string("json", None, "Also write the plan (or the does-not-fit verdict) as "
                            "JSON to this file; '-' for stdout (the table then goes to stderr).")
flags.mark_flags_as_required(["config", "topology"])

def _versions() -> dict:
    import importlib.metadata as metadata

    found = {}
    for package in ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return {"versions": found}


def _check_json_path() -> None:
    """Before any compile: --json names a file we may write (absent or regular, never through a
    link) in a directory that exists."""
    if _JSON.value in (None, "-"):
        return
    directory = os.path.dirname(_JSON.value) or "."
    if not os.path.isdir(directory):
        raise UserError(f"--json={_JSON.value}: the directory {directory} does not exist")
    safe_files.refuse_unless_regular(_JSON.value)


def _write_json(record: dict) -> None:
    text = json.dumps(record, indent=1, sort_keys=True)
    if _JSON.value == "-":
        print(text)
        return
    try:
        safe_files.write_atomically(_JSON.value, text + "\n")
    except OSError as err:
        raise UserError(f"cannot write --json={_JSON.value} ({err.strerror or err})") from None


@cli.one_line_errors
def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sharesnet_jax import preflight
    from sharesnet_jax.training import validation

    config = cli.load_config(_CONFIG)
    validation.check_config(config)
    _check_json_path()
    context = _versions()
    try:
        result = preflight.plan(config, _TOPOLOGY.value, include_eval=_EVAL.value,
                                search_fit=_FIT_SEARCH.value,
                                compiler_options=preflight.FAST_COMPILE_OPTIONS
                                if _FAST_COMPILE.value else None)
    except preflight.DoesNotFit as verdict:
        if _JSON.value:
            _write_json(preflight.verdict_record(verdict, _TOPOLOGY.value, config, context))
        raise
    print(preflight.format_plan(result), file=sys.stderr if _JSON.value == "-" else sys.stdout)
    if _JSON.value:
        _write_json(preflight.plan_record(result, context))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
