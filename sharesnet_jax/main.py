"""Command line: `python -m sharesnet_jax.main --config=configs/X.py --workdir=DIR`.

Every config field can be overridden with `--config.FIELD=VALUE`. Several processes form one run
when started with --coordinator_address/--num_processes/--process_id, or under a launcher JAX
detects (Cloud TPU VMs, Slurm srun, Open MPI). Bad input ends in one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice bypasses the log level

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sharesnet_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator, for a multi-process run "
    "started by hand (default: $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                   "num_processes - 1.", lower_bound=0)
_INIT_TIMEOUT = flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for every "
                                     "process to join before exiting with an error.", lower_bound=1)


def main(argv: list[str]) -> int:
    code = _main(argv)
    if code:
        # A failed run may leave Orbax's writer threads blocked on a directory that refuses
        # writes; interpreter shutdown would wait for them forever. The line is printed: go.
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


@cli.one_line_errors
def _main(argv: list[str]) -> int:
    if len(argv) > 1:
        from sharesnet_jax.errors import UserError

        raise UserError(f"unexpected argument(s) {' '.join(map(repr, argv[1:]))}: every option "
                        "is a flag (--config=FILE, --workdir=DIR, --config.FIELD=VALUE)")
    from sharesnet_jax.training import preemption

    preemption.watch_early()  # SIGTERM during set-up: a clean exit 0, not a silent 143
    from sharesnet_jax.data import hide_accelerators_from_tensorflow
    from sharesnet_jax.training import cluster

    hide_accelerators_from_tensorflow()
    cli.quiet_library_logs()
    # Before anything touches a device: JAX's backends start with the cluster's topology.
    settings = cluster.cluster_settings(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
    if settings is not None:
        cluster.join_cluster(settings, _INIT_TIMEOUT.value)
    import jax

    logging.info("Process %d of %d; local devices: %s; %d devices in all", jax.process_index(),
                 jax.process_count(), jax.local_devices(), jax.device_count())
    from sharesnet_jax.training.trainer import train_and_evaluate

    train_and_evaluate(cli.load_config(_CONFIG), _WORKDIR.value)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
