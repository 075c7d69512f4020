"""Planning a run for a TPU slice from any machine: the trainer's own train and eval steps
compiled ahead of time for a named topology (`v5e:2x4`) through libtpu's topology API, and what a
chip would hold and do.

Why: a config that does not fit a chip's HBM fails minutes into a paid TPU job; XLA's TPU
compiler can tell on a CPU machine, in the time of one compile. Nothing here touches a TPU or
allocates an array: the state and batch are `jax.ShapeDtypeStruct`s with shardings.
`chips` (generations, slices), `hlo` (reading the compiler's text), `compile` (ahead-of-time
compiles and memory; the trainer's pre-flight check), `plan` (the plan), `report` (its table);
the command line is `python -m sharesnet_jax.aot`.
"""

from sharesnet_jax.training.tpu.chips import (
    CHIPS, TOPOLOGY_EXAMPLE, DoesNotFit, PlanError, generation_of, known_compiler_crash,
    libtpu_version, refuse_known_compiler_crash, require_libtpu, tpu_slice,
)
from sharesnet_jax.training.tpu.compile import Memory, check_fits_device, compile_step
from sharesnet_jax.training.tpu.hlo import all_reduce_bytes, parse_out_of_memory
from sharesnet_jax.training.tpu.plan import plan
from sharesnet_jax.training.tpu.report import format_plan

__all__ = ["CHIPS", "TOPOLOGY_EXAMPLE", "DoesNotFit", "Memory", "PlanError", "all_reduce_bytes",
           "check_fits_device", "compile_step", "format_plan", "generation_of",
           "known_compiler_crash", "libtpu_version", "parse_out_of_memory", "plan",
           "refuse_known_compiler_crash", "require_libtpu", "tpu_slice"]
