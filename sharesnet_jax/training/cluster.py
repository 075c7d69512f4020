"""Joining a multi-process run: one process per host (TPU pod slices), per GPU or node (Slurm,
Open MPI), or several started by hand with a coordinator address.

A plain single-process run never waits for anyone; a process that cannot join within the
timeout exits with one line instead of JAX's C++ abort.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import socket
import sys
import threading

import jax

from sharesnet_jax.errors import UserError


def cluster_settings(coordinator_address: str | None, num_processes: int | None,
                     process_id: int | None, env=os.environ) -> dict | None:
    """The arguments of `jax.distributed.initialize` for this process; None when it runs alone.

    Explicit flags win. Without them JAX's own detection is used only where a launcher has said
    that several processes were started (Slurm `srun`, Open MPI) or on a Cloud TPU VM, whose
    metadata names the hosts of the slice: elsewhere a lone process must not wait for others.
    """
    if coordinator_address is not None or num_processes is not None or process_id is not None:
        coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
        if num_processes is None or process_id is None or not coordinator_address:
            raise UserError("a multi-process run needs --coordinator_address=HOST:PORT (or "
                            "$JAX_COORDINATOR_ADDRESS), --num_processes and --process_id")
        host, colon, port = coordinator_address.rpartition(":")
        if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise UserError(f"--coordinator_address={coordinator_address!r} is not HOST:PORT "
                            "with a port in 1..65535, e.g. 10.0.0.1:12345")
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
    """TPU chips on this host and libtpu to drive them: a Cloud TPU VM, whose metadata server
    JAX asks for the slice's hosts. (The same device files libtpu itself looks for.)"""
    chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    return bool(chips) and importlib.util.find_spec("libtpu") is not None


def join_cluster(settings: dict, timeout: int) -> None:
    """`jax.distributed.initialize`, bounded: when not every process has joined after `timeout`
    seconds this process prints one line and exits 1. (JAX's own timeout aborts the process
    with a C++ stack trace instead; it is set later than ours, as a backstop.)"""
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
