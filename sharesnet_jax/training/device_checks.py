"""What the trainer checks about the accelerator it runs on, before its first step: that the
compiled step fits the device's memory, and whether the installed libtpu is known to crash
compiling our steps for this TPU generation. The planner (`sharesnet_jax.preflight`) reuses both
facts for devices it only compiles for."""

from __future__ import annotations

import dataclasses
import importlib.metadata

from sharesnet_jax.errors import UserError
from sharesnet_jax.units import gib


@dataclasses.dataclass(frozen=True)
class Memory:
    """Per device, from `compiled.memory_analysis()`."""

    arguments: int
    outputs: int
    aliased: int  # outputs that reuse donated argument buffers
    temporaries: int
    generated_code: int

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code

    @classmethod
    def of(cls, compiled) -> "Memory":
        m = compiled.memory_analysis()
        return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes, m.generated_code_size_in_bytes)


def check_fits_device(compiled, device) -> None:
    """Raises UserError (one line) when the compiled step needs more memory than `device` has.

    For the trainer, before its first step: `compiled = train_step.lower(state, batch).compile()`
    (then run `compiled`, so the step is not compiled twice). A no-op where the backend reports
    no limit (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    limit = (stats or {}).get("bytes_limit")
    if not limit:
        return
    need = Memory.of(compiled).total
    if need > limit:
        raise UserError(f"the train step needs {gib(need)} per device but {device.device_kind} "
                        f"{device.id} has {gib(limit)}: lower --config.batch_size or set "
                        "--config.remat_policy=conv_outputs (or full)")


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


# `device_kind` of each generation's devices, as libtpu's topologies name them.
_DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v6 lite": "v6e"}


def generation_of(device) -> str | None:
    """The generation of a real TPU device from its `device_kind` ('TPU v6 lite' -> 'v6e')."""
    return _DEVICE_KINDS.get(getattr(device, "device_kind", ""))
