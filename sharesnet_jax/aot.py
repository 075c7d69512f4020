"""Command line: will this config fit, and how fast could it run, on a TPU slice?

    python -m sharesnet_jax.aot --config=configs/imagenet_sharesnet152.py --topology=v5e:2x4 \
        [--config.FIELD=VALUE ...]

Compiles the trainer's train and eval steps for the named slice on this machine (no TPU needed;
libtpu must be installed: `pip install -e ".[tpu]"`) and prints one table: chips and hosts,
per-chip batch, compile times, HBM per chip against the chip's capacity, FLOPs per chip, the
all-reduce bytes per step and a roofline ESTIMATE of step time. A config that does not fit exits
1 with one line saying what would; bad input exits 2 with one line. See `training/tpu`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for TPU; never look for local TPUs
# On a machine without TPUs libtpu asks the (absent) Cloud metadata for these and logs two
# warnings and an error. Any valid values silence it; the topology descriptions and the compiled
# programs do not depend on them. Set here, in the CLI only: on a TPU VM the trainer must get the
# real ones from JAX.
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
# Compile times are measured, and TPU executables compiled from a topology cannot be read back
# from JAX's persistent cache anyway (training/tpu/compile.py).
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharesnet_jax import cli  # noqa: E402
from sharesnet_jax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice as GENERATION:SHAPE, e.g. v5e:2x4, "
                                "v5p:2x2x1, v6e:2x4, v4:2x2x1.")
_EVAL = flags.DEFINE_boolean("eval", True, "Also compile the eval step.")
_FIT_SEARCH = flags.DEFINE_boolean("fit_search", True, "When the step does not fit, compile at "
                                   "smaller batches (and with remat) to say what would.")
_FAST_COMPILE = flags.DEFINE_boolean(
    "fast_compile", False, "Ask XLA for its least compile-time optimisation (about 5x faster "
    "compiles; the memory and speed figures are then those of a less optimised program).")
flags.mark_flags_as_required(["config", "topology"])

FAST_COMPILE_OPTIONS = {"exec_time_optimization_effort": -1.0}


@cli.one_line_errors
def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sharesnet_jax.training import tpu, validation

    try:
        tpu.require_libtpu()
    except ImportError:
        raise UserError('libtpu is not installed: pip install -e ".[tpu]"') from None
    config = cli.load_config(_CONFIG)
    validation.check_config(config)
    result = tpu.plan(config, _TOPOLOGY.value, include_eval=_EVAL.value,
                      search_fit=_FIT_SEARCH.value,
                      compiler_options=FAST_COMPILE_OPTIONS if _FAST_COMPILE.value else None)
    print(tpu.format_plan(result))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
