"""SIGTERM/SIGINT become a request to checkpoint after the current step and exit cleanly.

Schedulers and preemptible VMs send SIGTERM with a grace period; finishing the step in flight
and saving it loses nothing. A second signal falls back to the default (immediate) behaviour.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_EARLY = threading.Event()  # a signal seen by `watch_early`, before the trainer's watch began


def watch_early() -> None:
    """From the start of a command line on, SIGTERM/SIGINT are noted instead of killing the
    process; the trainer's `PreemptionWatch` then stops cleanly (exit 0) at its next check."""
    if threading.current_thread() is not threading.main_thread():
        return

    for sig in _SIGNALS:
        signal.signal(sig, _note_early)


def _note_early(signum, frame) -> None:
    logging.warning("Received %s during set-up: will stop before the first step",
                    signal.Signals(signum).name)
    _EARLY.set()
    _act_at_once()


def _act_at_once() -> None:
    """The default handlers back: a second signal stops the process at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class SetUpInterrupted(Exception):
    """SIGTERM/SIGINT arrived before the first step: nothing to checkpoint, a clean exit."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step  # the step the run would have started from


class PreemptionWatch:
    def __init__(self):
        self._requested = threading.Event()
        self._previous = {}
        self._in_flight = None  # Several processes: the flags gathered at the previous step.

    def __enter__(self) -> "PreemptionWatch":
        if _EARLY.is_set():
            self._requested.set()
        elif threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        logging.warning("Received %s: will checkpoint after the current step and exit",
                        signal.Signals(signum).name)
        self._requested.set()
        for sig, handler in self._previous.items():  # a second signal acts at once
            signal.signal(sig, handler)
        if _note_early in self._previous.values():
            _act_at_once()

    def stop_during_set_up(self, step: int) -> None:
        """Raises `SetUpInterrupted(step)` when a signal came before the first step. A lone
        process only: on several, the first steps' collective check makes every process stop at
        the same step."""
        if (self._requested.is_set() or _EARLY.is_set()) and jax.process_count() == 1:
            raise SetUpInterrupted(step)

    def requested(self, step: int, checkpoints) -> bool:
        """Whether to stop after `step`. On several processes every process must answer the
        same at the same step, or the ones that go on would wait forever in a collective.

        There, the processes' flags are combined by a small collective dispatched at each step
        and read one step later, when it has finished with that step's training: a signal takes
        effect a step later, and the check never makes the host wait for the step in flight."""
        local = self._requested.is_set()
        if jax.process_count() == 1:
            return local
        gathered, self._in_flight = self._in_flight, _any_process(local)
        anyone = gathered is not None and bool(gathered)
        return anyone or checkpoints.reached_preemption(step)


@functools.cache
def _flag_reduction():
    mesh = Mesh(np.asarray(jax.devices()), ("processes",))
    return (NamedSharding(mesh, PartitionSpec("processes")),
            jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec())))


def _any_process(flag: bool) -> jax.Array:
    """1 when `flag` is set on any process; dispatched without waiting for the result."""
    sharding, reduce_max = _flag_reduction()
    flags = np.full((jax.local_device_count(),), flag, np.int32)
    return reduce_max(jax.make_array_from_process_local_data(sharding, flags))
