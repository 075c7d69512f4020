"""SIGTERM/SIGINT become a request to checkpoint after the current step and exit cleanly.

Schedulers and preemptible VMs send SIGTERM with a grace period; finishing the step in flight
and saving it loses nothing. A second signal falls back to the default (immediate) behaviour.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatch:
    def __init__(self):
        self._requested = threading.Event()
        self._previous = {}

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():
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

    def requested(self, step: int, checkpoints) -> bool:
        """Whether to stop after `step`. On several processes every process must answer the
        same at the same step, or the ones that go on would wait forever in a collective."""
        local = self._requested.is_set()
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        anyone = bool(np.any(multihost_utils.process_allgather(np.int32(local))))
        return anyone or checkpoints.reached_preemption(step)
