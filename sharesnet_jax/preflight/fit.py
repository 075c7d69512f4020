"""What fits when the train step does not: from the failed compile's own figures and at most
one more compile.

Why bounded: a full compile of a 152-layer ImageNet step takes minutes on a small machine, and
halving the batch until something fits took three or more of them. Memory is modelled as the
train state (parameters, optimizer state, BatchNorm statistics: independent of the batch) plus
a part proportional to the per-device batch (activations), fitted through the compile(s) at
hand. The suggested batch is then compiled once; if that still does not fit, the line through
both compiles gives the suggestion, reported as an estimate.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sharesnet_jax.models import REMAT_POLICIES
from sharesnet_jax.preflight.accelerators import Cluster, DoesNotFit
from sharesnet_jax.preflight.compile import compile_step
from sharesnet_jax.preflight.hlo import OutOfMemory
from sharesnet_jax.training.config import remat_policy
from sharesnet_jax.units import gib


def state_bytes(state: Any) -> int:
    """Bytes of the (abstract) train state on one device: it is replicated."""
    return sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(state))


def _power_of_two_at_most(n: float) -> int:
    return 2 ** int(math.log2(n)) if n >= 1 else 0


def batch_within(usable: int, fixed: float, per_image: float) -> int:
    """The largest power-of-two per-device batch whose modelled memory stays within `usable`."""
    if per_image <= 0:
        return 0
    return _power_of_two_at_most((usable - fixed) / per_image)


def largest_batch_estimate(per_device_batch: int, total: int, fixed: int,
                           usable: int) -> int | None:
    """An ESTIMATE of the largest power-of-two per-device batch that fits, from one compile's
    memory total; None when the compile's memory does not grow with the batch."""
    return batch_within(usable, fixed, (total - fixed) / per_device_batch) or None


def _with(config, **overrides):
    trial = config.copy_and_resolve_references()
    with trial.unlocked():
        for key, value in overrides.items():
            trial[key] = value
    return trial


def does_not_fit(config, cluster: Cluster, per_device_batch: int, oom: OutOfMemory, fixed: int,
                 compiler_options: dict | None, search: bool,
                 build_steps: Callable) -> DoesNotFit:
    """The one-line verdict (and its record): what the step needs, what the device has, and
    what would fit, saying which figure was compiled and which is an estimate."""
    device, n = cluster.accelerator, cluster.num_devices
    unit = device.unit
    usable = oom.available or device.usable_bytes
    needed = oom.needed
    head = (f"{config.model} at {per_device_batch} images per {unit} needs "
            f"{gib(needed) if needed else 'more memory than'} per {unit}; one {device.name} "
            f"{unit} has {gib(usable)} usable")
    record: dict[str, Any] = {"fits": False, "per_device_batch": per_device_batch,
                              "needed_bytes": needed, "usable_bytes": usable,
                              "suggested_per_device_batch": None, "suggestion_compiled": False}
    options = []
    estimate = (batch_within(usable, fixed, (needed - fixed) / per_device_batch) if needed
                else per_device_batch // 2)
    candidate = min(estimate, per_device_batch // 2)  # the batch itself did not fit
    suggestion = ""
    if candidate >= 1 and search:
        built = build_steps(_with(config, batch_size=candidate * n), cluster)
        try:
            compiled = compile_step(built.train_step, built.state, built.train_batch,
                                    compiler_options=compiler_options, capacity=usable)
            record.update(suggested_per_device_batch=candidate, suggestion_compiled=True,
                          suggestion_total_bytes=compiled.memory.total)
            suggestion = (f"--config.batch_size={candidate * n} ({candidate} per {unit}) fits "
                          f"(compiled: {gib(compiled.memory.total)})")
        except OutOfMemory as second:
            record["suggestion_failed_per_device_batch"] = candidate
            refit = candidate // 2
            if needed and second.needed and second.needed < needed:
                per_image = (needed - second.needed) / (per_device_batch - candidate)
                refit = min(refit, batch_within(usable, second.needed - per_image * candidate,
                                                per_image))
            candidate = refit
            if candidate >= 1:
                record["suggested_per_device_batch"] = candidate
                suggestion = (f"--config.batch_size={candidate * n} ({candidate} per {unit}) "
                              f"should fit (estimate; {record['suggestion_failed_per_device_batch']}"
                              f" per {unit} was compiled and did not)")
    elif candidate >= 1:
        record["suggested_per_device_batch"] = candidate
        suggestion = (f"--config.batch_size={candidate * n} ({candidate} per {unit}) should fit "
                      "(estimate from this compile)")
    if suggestion:
        options.append(suggestion)
    # Cheapest first: 'conv_outputs' recomputes no convolution, 'full' a whole forward pass.
    current = REMAT_POLICIES.index(remat_policy(config) or "none")
    if current + 1 < len(REMAT_POLICIES):
        policy = REMAT_POLICIES[current + 1]
        record["remat_suggestion"] = policy
        options.append(f"--config.remat_policy={policy} keeps fewer activations (not compiled)")
    if not suggestion:
        options.insert(0, f"not even 1 image per {unit} fits at this memory model (estimate)")
    message = f"{head}: {' or '.join(options)}"
    record["message"] = message
    return DoesNotFit(message, record)
