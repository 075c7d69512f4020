"""Compiling a jitted step ahead of time and reading its memory, for a TPU slice (the planner) or
the device the trainer runs on (its pre-flight check)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache

from sharesnet_jax.errors import UserError
from sharesnet_jax.training.tpu.chips import gib
from sharesnet_jax.training.tpu.hlo import OutOfMemory, parse_out_of_memory


@dataclasses.dataclass(frozen=True)
class Memory:
    """Per chip, from `compiled.memory_analysis()`."""

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


@dataclasses.dataclass(frozen=True)
class Compiled:
    executable: Any
    lower_seconds: float
    compile_seconds: float
    memory: Memory


@contextlib.contextmanager
def _without_persistent_cache() -> Iterator[None]:
    """A TPU executable compiled from a topology cannot be read back from JAX's persistent
    cache (there is no TPU client to load it: 'PjRtCompiler must be constructed with a Client'),
    and a cache hit would hide the compile time being measured: compile with the cache off."""
    enabled = jax.config.jax_enable_compilation_cache
    if not enabled:
        yield
        return
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides once per process whether the cache is used
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        compilation_cache.reset_cache()


def compile_step(jitted: Callable, *args, compiler_options: dict | None = None,
                 capacity: int | None = None) -> Compiled:
    """Lowers and compiles for the mesh's TPU devices. RESOURCE_EXHAUSTED becomes OutOfMemory,
    and so does a memory_analysis total above `capacity`: XLA has been seen to compile a step
    whose temporaries alone exceed the chip (cifar_sharesnet1001, scan, 18.9 GiB on v5e), which
    the trainer's pre-flight check (`check_fits_device`) would then refuse."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    try:
        with _without_persistent_cache():
            executable = (lowered.compile(compiler_options) if compiler_options
                          else lowered.compile())
    except jax.errors.JaxRuntimeError as err:
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text:
            raise
        raise OutOfMemory(*parse_out_of_memory(text), " ".join(text.split())[:500]) from None
    done = time.perf_counter()
    memory = Memory.of(executable)
    if capacity is not None and memory.total > capacity:
        raise OutOfMemory(memory.total, capacity, "memory_analysis total above capacity")
    return Compiled(executable, lowered_at - start, done - lowered_at, memory)


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
