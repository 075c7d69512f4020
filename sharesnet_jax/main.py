"""Command line: `python -m sharesnet_jax.main --config=configs/X.py --workdir=DIR`.

Every config field can be overridden with `--config.FIELD=VALUE`. A thin layer over
`train.train_and_evaluate`; bad input ends in one line on stderr, not a traceback.

Several processes (hosts) form one run when started with `--coordinator_address`,
`--num_processes` and `--process_id`, or without flags under a cluster JAX detects itself
(Cloud TPU VMs, Slurm `srun`, Open MPI `mpirun`); a plain single-process run never waits for
anyone. A process that cannot join within `--initialization_timeout` seconds exits with one line.
"""

from __future__ import annotations

import logging as std_logging
import os
import socket
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice bypasses the log level

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT where process 0 serves the coordinator of a "
    "multi-process run started by hand (default: $JAX_COORDINATOR_ADDRESS). Not needed on Cloud "
    "TPU VMs, under Slurm srun or Open MPI, where JAX finds it.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run, all started "
                                      "with the same flags but --process_id.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                   "num_processes - 1; process 0 serves the coordinator.",
                                   lower_bound=0)
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds a process of a multi-process run waits for all the "
    "others to join before it exits with an error.", lower_bound=1)


def _hide_accelerators_from_tensorflow() -> None:
    """JAX owns the accelerators; TF (input pipeline only) must not reserve their memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (ImportError, RuntimeError, ValueError):
        pass


def _quiet_library_info_logs() -> None:
    """Orbax logs every save at INFO in detail; keep its warnings and ours, drop its chatter."""

    def keep(record) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

    logging.get_absl_handler().python_handler.addFilter(keep)


def cluster_settings(coordinator_address: str | None, num_processes: int | None,
                     process_id: int | None, env=os.environ) -> dict | None:
    """The arguments of `jax.distributed.initialize` for this process; None when it runs alone.

    Explicit flags win. Without them JAX's own detection is used only where a launcher has said
    that several processes were started (Slurm `srun`, Open MPI) or on a Cloud TPU VM, whose
    metadata names the hosts of the slice: elsewhere a lone process must not wait for others.
    """
    from sharesnet_jax.errors import UserError

    if coordinator_address is not None or num_processes is not None or process_id is not None:
        coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
        if num_processes is None or process_id is None or not coordinator_address:
            raise UserError("a multi-process run needs --coordinator_address=HOST:PORT (or "
                            "$JAX_COORDINATOR_ADDRESS), --num_processes and --process_id")
        if process_id >= num_processes:
            raise UserError(f"--process_id={process_id} must be below "
                            f"--num_processes={num_processes}")
        if num_processes == 1:
            return None
        return {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id}
    slurm_step = all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID",
                                        "SLURM_LOCALID"))  # srun; a batch script alone has none
    slurm = slurm_step and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", 1))) > 1
    open_mpi = "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", 1)) > 1
    tpu = "TPU_WORKER_HOSTNAMES" in env or _on_cloud_tpu_vm()
    return {} if slurm or open_mpi or tpu or env.get("JAX_COORDINATOR_ADDRESS") else None


def _on_cloud_tpu_vm() -> bool:
    try:  # Set when `import jax` found TPU chips and libtpu; JAX keeps no public flag for it.
        from jax._src import cloud_tpu_init

        return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
    except ImportError:
        return False


def _join_cluster(settings: dict, timeout: int) -> None:
    """`jax.distributed.initialize`, bounded: when not every process has joined after `timeout`
    seconds this process prints one line and exits 1. (JAX's own timeout aborts the process
    with a C++ stack trace instead; it is set later than ours, as a backstop.)"""
    import jax

    from sharesnet_jax.errors import UserError

    joined = threading.Event()
    address = settings.get("coordinator_address")
    process_id = settings.get("process_id")

    def give_up() -> None:
        if joined.is_set():
            return
        if address and process_id != 0 and not _reachable(address):
            message = (f"process {process_id} cannot reach the coordinator at {address} within "
                       f"{timeout} s: start process 0 (--process_id=0) there, or fix "
                       "--coordinator_address")
        else:
            who = f"process {process_id} of {settings['num_processes']}" if address else (
                "this process")
            message = (f"the multi-process run did not form within {timeout} s ({who}, "
                       f"coordinator {address or 'detected by JAX'}): not every process joined; "
                       "start all of them with the same --coordinator_address and "
                       "--num_processes, or raise --initialization_timeout")
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(1)  # Not sys.exit: JAX's exit handlers would wait for the missing processes.

    if jax.config.jax_cpu_collectives_implementation is None:  # Cross-process CPU collectives
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (older JAX: none).
    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        jax.distributed.initialize(**settings, initialization_timeout=timeout + 30)
    except (ValueError, TypeError, RuntimeError) as err:
        raise UserError(f"cannot start the multi-process run: {' '.join(str(err).split())}"
                        ) from None
    finally:
        joined.set()
        timer.cancel()


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _hide_accelerators_from_tensorflow()
    _quiet_library_info_logs()
    import jax

    from sharesnet_jax.errors import UserError

    try:  # Before anything touches a device: JAX's backends start with the cluster's topology.
        settings = cluster_settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        if settings is not None:
            _join_cluster(settings, _INIT_TIMEOUT.value)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.info("Process %d of %d; local devices: %s; %d devices in all", jax.process_index(),
                 jax.process_count(), jax.local_devices(), jax.device_count())

    from sharesnet_jax import train

    try:
        config = _CONFIG.value
        config.keys()  # the file loads lazily: make it fail here if it is missing or broken
    except Exception as err:  # noqa: BLE001 - the config file is the user's code
        print(f"error: cannot load --config: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    try:
        train.train_and_evaluate(config, _WORKDIR.value)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a bad flag or config override reported in one line, not a trace."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        message = str(err)
    except (AttributeError, KeyError) as err:  # config_dict's unknown-field errors
        text = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        message = f"unknown config field: {text}"
    except (OSError, SyntaxError, ValueError, TypeError) as err:
        message = f"bad --config: {type(err).__name__}: {err}"
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
