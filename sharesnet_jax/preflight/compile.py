"""Compiling a jitted step ahead of time for a cluster's devices and reading its memory."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache

from sharesnet_jax.preflight.hlo import OutOfMemory, parse_out_of_memory
from sharesnet_jax.training.device_checks import Memory


# XLA's effort level O0 (jax's EffortLevel / CompilerEffortLevel value 9), for `aot
# --fast_compile`: an option jax 0.10 and 0.12 both accept (0.12 removed
# `exec_time_optimization_effort`).
FAST_COMPILE_OPTIONS = {"optimization_level": 9}


@dataclasses.dataclass(frozen=True)
class Compiled:
    executable: Any
    lower_seconds: float
    compile_seconds: float
    memory: Memory


@contextlib.contextmanager
def _without_persistent_cache() -> Iterator[None]:
    """An executable compiled from a topology cannot be read back from JAX's persistent cache
    (there is no TPU or GPU client to load it: 'PjRtCompiler must be constructed with a Client'),
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
    """Lowers and compiles for the mesh's devices. RESOURCE_EXHAUSTED becomes OutOfMemory, and so
    does a memory_analysis total above `capacity`: XLA's GPU compiler never refuses, and its TPU
    compiler has been seen to compile a step whose temporaries alone exceed the chip
    (cifar_sharesnet1001, scan, 18.9 GiB on v5e), which the trainer's own check
    (`training.device_checks.check_fits_device`) would then refuse."""
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
