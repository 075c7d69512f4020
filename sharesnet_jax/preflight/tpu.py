"""TPU generations and slices: published chip figures and the slice's devices from libtpu's
topology API (no TPU needed)."""

from __future__ import annotations

import os
import re
from typing import Sequence

from sharesnet_jax.preflight.accelerators import Accelerator, Cluster, PlanError
from sharesnet_jax.training.device_checks import known_compiler_crash
from sharesnet_jax.units import GIB

# Published chip figures. Sources (Cloud TPU system architecture pages, read 2026-11):
#   v4:  docs.cloud.google.com/tpu/docs/v4   275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s. The page
#        gives no per-chip ICI figure: 6 links x 45 GB/s each way (JAX scaling book, "How to
#        think about TPUs", jax-ml.github.io/scaling-book/tpus) = 540 GB/s bidirectional.
#   v5e: docs.cloud.google.com/tpu/docs/v5e  197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s,
#        400 GB/s bidirectional ICI per chip.
#   v5p: docs.cloud.google.com/tpu/docs/v5p  459 TFLOP/s bf16, 95 GiB HBM2e at 2765 GB/s,
#        1200 GB/s bidirectional ICI per chip.
#   v6e: docs.cloud.google.com/tpu/docs/v6e  918 TFLOP/s bf16, 32 GB HBM at 1638 GB/s,
#        800 GB/s bidirectional ICI per chip.
# `usable_bytes` is what XLA itself says it may use (its RESOURCE_EXHAUSTED message, libtpu
# 0.0.42.1); a step fits when it compiles and its memory_analysis total stays within it.
#
# v4 is planned per TensorCore: libtpu's topology lists each v4 chip's two TensorCores as two
# devices with half the chip's HBM each (XLA: 15.25 GiB usable), and has no megacore device;
# the planner keeps one per chip (`one_device_per_chip`), so its v4 figures are one
# TensorCore's: half the chip's peak, HBM and HBM bandwidth.
_USABLE = "what XLA's TPU compiler says it may allocate"


def _chip(name, flops, hbm, usable, bandwidth, ici, note=""):
    return Accelerator(name, "tpu", flops, hbm, usable, bandwidth, ici, usable_note=_USABLE,
                       note=note)


CHIPS: dict[str, Accelerator] = {
    "v4": _chip("v4", 275e12 / 2, 16 * GIB, int(15.25 * GIB), 1200e9 / 2, 540e9,
                note="v4: planned for one of each chip's two TensorCores (libtpu's topology has "
                     "no megacore device): HBM and peaks are per TensorCore, half the chip's"),
    "v5e": _chip("v5e", 197e12, 16 * GIB, int(15.75 * GIB), 819e9, 400e9),
    "v5p": _chip("v5p", 459e12, 95 * GIB, int(95.74 * GIB), 2765e9, 1200e9),
    "v6e": _chip("v6e", 918e12, 32 * GIB, int(31.25 * GIB), 1638e9, 800e9),
}
TOPOLOGY_EXAMPLE = "v5e:2x4"


def is_tpu_topology(topology: str) -> bool:
    return topology.partition(":")[0] in CHIPS


def parse_generation(topology: str) -> Accelerator:
    generation, sep, shape = topology.partition(":")
    if not sep or generation not in CHIPS or not re.fullmatch(r"\d+(x\d+)+", shape):
        raise PlanError(f"unknown TPU topology {topology!r}: give GENERATION:SHAPE with a "
                        f"generation among {', '.join(CHIPS)}, e.g. --topology={TOPOLOGY_EXAMPLE}")
    return CHIPS[generation]


def one_device_per_chip(devices: Sequence) -> list:
    """v4 lists both TensorCores of each chip as devices, and `jax.make_mesh` refuses them (it
    wants one device per chip; on v4 hardware JAX shows one megacore device per chip). Keeping
    core 0 of every chip gives that mesh; the program is then one TensorCore's, with its half
    of the chip's HBM (see CHIPS['v4'])."""
    return [d for d in devices if getattr(d, "core_on_chip", 0) == 0]


def require_libtpu() -> None:
    """Fails loudly (ImportError) when libtpu is missing: without it nothing compiles for TPU."""
    import libtpu  # noqa: F401  # pip install "jax[tpu]" (the `tpu` extra)


def tpu_slice(topology: str) -> Cluster:
    chip = parse_generation(topology)
    try:
        require_libtpu()
    except ImportError:
        raise PlanError('planning for TPU needs libtpu: pip install -e ".[tpu]"') from None
    refuse_known_compiler_crash(chip.name)
    # libtpu takes /tmp/libtpu_lockfile so that two processes never drive one TPU; compiling
    # opens no TPU, and without this a second planner (or a test's subprocess) fails to start.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        description = topologies.get_topology_desc(topology_name=topology, platform="tpu")
    except Exception as err:  # noqa: BLE001 - libtpu reports bad shapes as JaxRuntimeError
        reason = " ".join(str(err).split())
        raise PlanError(f"libtpu does not know topology {topology!r} ({reason}); e.g. "
                        f"--topology={TOPOLOGY_EXAMPLE}") from None
    devices = one_device_per_chip(description.devices)
    hosts = len({d.process_index for d in devices})
    return Cluster(topology, chip, tuple(devices), hosts)


def refuse_known_compiler_crash(generation: str, version: str | None = None) -> None:
    reason = known_compiler_crash(generation, version)
    if reason:
        raise PlanError(reason)
