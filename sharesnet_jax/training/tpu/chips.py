"""TPU generations and slices: published chip figures, the slice's devices from libtpu's
topology API (no TPU needed), and the planner's one-line errors."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
from typing import Sequence

from sharesnet_jax.errors import UserError

GIB = 2**30


def gib(nbytes: float | None) -> str:
    return "?" if nbytes is None else f"{nbytes / GIB:.2f} GiB"


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
# `hbm_usable` is what XLA itself says it may use (its RESOURCE_EXHAUSTED message, libtpu
# 0.0.42.1); a step fits when it compiles and its memory_analysis total stays within it.
#
# v4 is planned per TensorCore: libtpu's topology lists each v4 chip's two TensorCores as two
# devices with half the chip's HBM each (XLA: 15.25 GiB usable), and has no megacore device;
# the planner keeps one per chip (`one_device_per_chip`), so its v4 figures are one
# TensorCore's: half the chip's peak, HBM and HBM bandwidth.


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str
    peak_bf16_flops: float  # FLOP/s
    hbm_bytes: int  # published
    hbm_usable: int  # what XLA allocates at most
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s, both directions, all links of one chip
    note: str = ""


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 275e12 / 2, 16 * GIB, int(15.25 * GIB), 1200e9 / 2, 540e9,
               note="v4: planned for one of each chip's two TensorCores (libtpu's topology has "
                    "no megacore device): HBM and peaks are per TensorCore, half the chip's"),
    "v5e": Chip("v5e", 197e12, 16 * GIB, int(15.75 * GIB), 819e9, 400e9),
    "v5p": Chip("v5p", 459e12, 95 * GIB, int(95.74 * GIB), 2765e9, 1200e9),
    "v6e": Chip("v6e", 918e12, 32 * GIB, int(31.25 * GIB), 1638e9, 800e9),
}
TOPOLOGY_EXAMPLE = "v5e:2x4"

class PlanError(UserError):
    """A one-line problem the CLI prints as is; `exit_code` is what the process returns."""

    exit_code = 2


class DoesNotFit(PlanError):
    """The train step needs more HBM per chip than the chip has (XLA's RESOURCE_EXHAUSTED)."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str
    chip: Chip
    devices: tuple  # one per chip
    hosts: int

    @property
    def chips(self) -> int:
        return len(self.devices)


def parse_generation(topology: str) -> Chip:
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


def tpu_slice(topology: str) -> Slice:
    chip = parse_generation(topology)
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
    return Slice(topology, chip, tuple(devices), hosts)


# libtpu releases whose TPU compiler dies (SIGSEGV: no Python error, no message) on this
# project's training steps for a generation. Found with the planner on this project's machine
# (jax 0.10.2, benchmarks/aot_plan_runs.sh): libtpu 0.0.42.1 crashes compiling every paper config
# tried for v6e:2x4 (ImageNet ShaResNet-50/152, CIFAR ShaResNet-164; loop and scan alike) and
# scanned CIFAR nets even for one v6e chip, while the same steps compile for v4, v5e and v5p;
# libtpu 0.0.50.1 (the release jax 0.12 pins) compiles them for v6e. Only a 20-layer CIFAR net
# with loop stages was seen to compile for v6e under 0.0.42.1.
KNOWN_COMPILER_CRASHES = {("0.0.42", "v6e")}


def libtpu_version() -> str | None:
    try:
        return importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def known_compiler_crash(generation: str, version: str | None = None) -> str | None:
    """Why this libtpu (default: the installed one) cannot be trusted to compile for
    `generation`, in one line; None when no crash is known."""
    version = version or libtpu_version()
    for prefix, crashing in KNOWN_COMPILER_CRASHES:
        if version and generation == crashing and (
                version == prefix or version.startswith(prefix + ".")):
            return (f"libtpu {version} crashes (segmentation fault) compiling this project's "
                    f"training steps for {generation}: use a newer jax with the libtpu it pins "
                    "(Python 3.12+; libtpu 0.0.50.1 compiles them)")
    return None


def refuse_known_compiler_crash(generation: str, version: str | None = None) -> None:
    reason = known_compiler_crash(generation, version)
    if reason:
        raise PlanError(reason)


# `device_kind` of each generation's devices, as libtpu's topologies name them.
_DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v6 lite": "v6e"}


def generation_of(device) -> str | None:
    """The generation of a real TPU device from its `device_kind` ('TPU v6 lite' -> 'v6e')."""
    return _DEVICE_KINDS.get(getattr(device, "device_kind", ""))


def require_libtpu() -> None:
    """Fails loudly (ImportError) when libtpu is missing: without it nothing compiles for TPU."""
    import libtpu  # noqa: F401  # pip install "jax[tpu]" (the `tpu` extra)
