"""Pre-flight: will a config fit, and how fast could it run, on hardware this machine does not
have? The trainer's own train and eval steps compiled ahead of time for a TPU slice (libtpu's
topology API) or NVIDIA GPU hosts (XLA's CUDA compiler with a vendored target description), on
abstract state and batch: nothing is allocated and no accelerator is touched.

Why: a config that does not fit fails minutes into a paid job; the accelerator's compiler can
tell on a CPU machine, in the time of one compile. A layer on top of training (it builds the
steps with `training.run_setup`); training never imports it. The trainer's own checks on the
device it runs on live in `training.device_checks`.

`accelerators` (figures, clusters, errors), `tpu` and `gpu` (the targets), `targets` (--topology),
`compile` (ahead-of-time compiles), `hlo` (reading the compiler's text), `plan` (the plan), `fit`
(what fits when it does not), `report` (its table and record); the command line is
`python -m sharesnet_jax.aot`.
"""

from sharesnet_jax.preflight.accelerators import Accelerator, Cluster, DoesNotFit, PlanError
from sharesnet_jax.preflight.compile import FAST_COMPILE_OPTIONS
from sharesnet_jax.preflight.gpu import GPUS
from sharesnet_jax.preflight.hlo import all_reduce_bytes, parse_out_of_memory
from sharesnet_jax.preflight.plan import Plan, plan
from sharesnet_jax.preflight.report import format_plan, plan_record, verdict_record
from sharesnet_jax.preflight.tpu import CHIPS, refuse_known_compiler_crash, require_libtpu

__all__ = ["CHIPS", "FAST_COMPILE_OPTIONS", "GPUS", "Accelerator", "Cluster", "DoesNotFit",
           "Plan", "PlanError", "all_reduce_bytes", "format_plan", "parse_out_of_memory", "plan",
           "plan_record", "refuse_known_compiler_crash", "require_libtpu", "verdict_record"]
