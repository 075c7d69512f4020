"""The plan: the trainer's own train and eval steps (built by `run_setup.build_run`) compiled for
a TPU slice or GPU hosts with abstract state and batch, and the figures a user needs before
renting them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from sharesnet_jax.data import synthetic
from sharesnet_jax.data.info import KNOWN_NUM_CLASSES, KNOWN_TRAIN_EXAMPLES, DatasetInfo
from sharesnet_jax.models import model_spec
from sharesnet_jax.models.stats import count_params, forward_macs
from sharesnet_jax.preflight.accelerators import Cluster, DoesNotFit, PlanError
from sharesnet_jax.preflight.compile import Compiled, compile_step
from sharesnet_jax.preflight.fit import does_not_fit, largest_batch_estimate, state_bytes
from sharesnet_jax.preflight.hlo import OutOfMemory, all_reduce_bytes, other_collectives
from sharesnet_jax.preflight.targets import cluster_for
from sharesnet_jax.training import sharding, validation
from sharesnet_jax.training.config import remat_policy
from sharesnet_jax.training.run_setup import build_run
from sharesnet_jax.training.steps import GRAD_REDUCE_DTYPES, create_train_state
from sharesnet_jax.units import gib


def planned_dataset(config) -> DatasetInfo:
    """The dataset's shapes without opening TFDS: `image_size` or the model family's, classes
    from the datasets the recipes name (or, for synthetic data, the config). Mean and std are
    constants in the program, not part of its cost."""
    family = model_spec(config.model).family
    name = config.dataset.split(":")[0]
    if config.dataset == synthetic.NAME:
        num_classes = config.num_classes or family.num_classes
        num_train = synthetic.NUM_TRAIN_EXAMPLES
    elif name in KNOWN_NUM_CLASSES:
        num_classes, num_train = KNOWN_NUM_CLASSES[name], KNOWN_TRAIN_EXAMPLES[name]
    else:
        raise PlanError(f"the planner does not know dataset {config.dataset!r} (known: "
                        f"{', '.join(KNOWN_NUM_CLASSES)}): plan it as --config.dataset=synthetic "
                        "--config.num_classes=N")
    return synthetic.synthetic_info(config.image_size or family.image_size, num_classes,
                                    num_train_examples=num_train)


def per_device(global_batch: int, cluster: Cluster, field: str) -> int:
    n, unit = cluster.num_devices, cluster.accelerator.unit
    if global_batch < n or global_batch % n:
        raise PlanError(f"{field}={global_batch} must be a positive multiple of the {n} "
                        f"{unit}s (it is the global batch, split evenly over them)")
    return global_batch // n


def rounded_eval_batch(eval_batch: int, devices: int) -> int:
    """The eval batch must split over the devices too; rounding up is what a user would do."""
    return -(-eval_batch // devices) * devices


def abstract_state(model, tx, image_shape, mesh) -> Any:
    """The train state's shapes via `jax.eval_shape` of the trainer's own `create_train_state`,
    each leaf a ShapeDtypeStruct replicated over the mesh, as the trainer lays it out."""
    shapes = jax.eval_shape(lambda: create_train_state(model, tx, 0, image_shape))
    replicated = sharding.replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                        shapes)


def abstract_batch(global_batch: int, image_shape, mesh, *, with_mask: bool) -> dict:
    """What the input pipeline yields (uint8 images, int32 labels, eval's float32 mask), split
    along 'data'."""
    split = sharding.batch_sharded(mesh)
    batch = {"image": jax.ShapeDtypeStruct((global_batch, *image_shape), jnp.uint8, sharding=split),
             "label": jax.ShapeDtypeStruct((global_batch,), jnp.int32, sharding=split)}
    if with_mask:
        batch["mask"] = jax.ShapeDtypeStruct((global_batch,), jnp.float32, sharding=split)
    return batch


@dataclasses.dataclass
class Steps:
    """The trainer's jitted steps and the abstract arguments they compile for."""

    model: Any
    info: DatasetInfo
    mesh: Any
    train_step: Callable
    eval_step: Callable
    state: Any
    train_batch: dict
    eval_batch: dict


def build_steps(config, cluster: Cluster, *, batch_size: int | None = None) -> Steps:
    """The trainer's steps (`run_setup.build_run`, the code `train_and_evaluate` runs) on a mesh
    of the cluster's devices; `batch_size` overrides the config's global batch (the fit search)."""
    info = planned_dataset(config)
    run = build_run(config, info, devices=cluster.devices)
    batch = batch_size or config.batch_size
    eval_batch = rounded_eval_batch(config.eval_batch_size, cluster.num_devices)
    return Steps(run.model, info, run.mesh, run.train_step, run.eval_step,
                 abstract_state(run.model, run.tx, info.image_shape, run.mesh),
                 abstract_batch(batch, info.image_shape, run.mesh, with_mask=False),
                 abstract_batch(eval_batch, info.image_shape, run.mesh, with_mask=True))


# ---------------------------------------------------------------------------------------------
# FLOPs and the roofline estimate.


def forward_passes(model) -> int:
    """Convolution passes of a train step in forward-pass units: the forward and the backward
    (two convolutions per forward one) make 3; remat_policy='full' runs the forward twice (4);
    'conv_outputs' keeps every convolution's output and recomputes only elementwise ops (3)."""
    return 4 if model.remat_policy == "full" else 3


def train_flops_per_device(model, image_shape, per_device_batch: int) -> int:
    """Our own count, not XLA's (whose cost analysis counts a scan body once): 2 FLOPs per
    multiply-add of the forward pass, times `forward_passes`."""
    return 2 * forward_macs(model, tuple(image_shape)) * per_device_batch * forward_passes(model)


# ---------------------------------------------------------------------------------------------
# What the gradient all-reduce should send.

GRADIENT_KINDS = ("shared 3x3 kernels", "other kernels", "BatchNorm and head")


def gradient_kind(path: tuple[str, ...]) -> str:
    if "shared_conv3x3" in path:
        return GRADIENT_KINDS[0]
    if path[-1] == "kernel" and "head" not in path:
        return GRADIENT_KINDS[1]
    return GRADIENT_KINDS[2]


def gradient_bytes_by_kind(params, grad_reduce_dtype: str) -> dict[str, int]:
    """Bytes each chip sends per step when every gradient is reduced once, in that dtype."""
    width = jnp.dtype(GRAD_REDUCE_DTYPES[grad_reduce_dtype]).itemsize
    totals = dict.fromkeys(GRADIENT_KINDS, 0)
    for path, leaf in traverse_util.flatten_dict(params).items():
        totals[gradient_kind(path)] += width * math.prod(leaf.shape)
    return totals


def statistics_bytes(model, batch_stats, per_device_batch: int) -> int:
    """BatchNorm's float32 all-reduces: the mean and mean square of every BatchNorm, averaged
    over the chips in the forward pass and their cotangents in the backward one (4 B x 2 per
    statistic); `bn_group_size` groups within a chip reduce only their running averages
    (4 B x 1); groups spanning chips reduce their statistics within the group, forward and
    backward, and their running averages over all chips (4 B x 3; models/batch_norm.py)."""
    statistics = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(batch_stats))
    group = model.bn_group_size
    if not group:
        return 8 * statistics
    if group <= per_device_batch:
        return 4 * statistics
    return 12 * statistics


def eval_flops_per_device(model, image_shape, per_device_batch: int) -> int:
    return 2 * forward_macs(model, tuple(image_shape)) * per_device_batch


@dataclasses.dataclass(frozen=True)
class Roofline:
    """An ESTIMATE from published peak figures, not a measurement: each term is the time the
    step would take if it were bound by that resource alone; the step can be no faster than
    the largest (perfect overlap assumed)."""

    compute_seconds: float
    hbm_seconds: float | None  # None when XLA's byte count is unreliable (scanned stages)
    all_reduce_seconds: float

    @property
    def step_seconds(self) -> float:
        return max(self.compute_seconds, self.hbm_seconds or 0.0, self.all_reduce_seconds)


def ring_all_reduce_seconds(nbytes: int, devices: int, send_bandwidth: float) -> float:
    """A ring all-reduce sends (and receives) 2(n-1)/n of the buffer per device, at the
    bandwidth one device can send (`Cluster.all_reduce_bandwidth`). Assumes every link is used."""
    if devices <= 1:
        return 0.0
    return 2 * (devices - 1) / devices * nbytes / send_bandwidth


def roofline(cluster: Cluster, flops: float, hbm_bytes_accessed: float | None,
             all_reduce: int) -> Roofline:
    device = cluster.accelerator
    hbm = hbm_bytes_accessed / device.memory_bandwidth if hbm_bytes_accessed else None
    return Roofline(flops / device.peak_bf16_flops, hbm,
                    ring_all_reduce_seconds(all_reduce, cluster.num_devices,
                                            cluster.all_reduce_bandwidth))


# ---------------------------------------------------------------------------------------------
# The plan.


@dataclasses.dataclass
class StepReport:
    per_device_batch: int
    compiled: Compiled
    flops: int  # per device per step, our count
    xla_flops: float | None  # compiled.cost_analysis(), for comparison


@dataclasses.dataclass
class Plan:
    config_summary: str
    target: Cluster
    global_batch: int
    train: StepReport
    all_reduce: dict[str, int]  # measured: bytes per dtype in the compiled train step
    other_collectives: list[str]
    estimate: Roofline
    num_params: int
    grad_reduce_dtype: str
    gradient_bytes: dict[str, int]  # expected: once per parameter, by GRADIENT_KINDS
    statistics_bytes: int  # expected: BatchNorm's statistics (see `statistics_bytes`)
    forward_passes: int
    largest_batch: int | None  # per device, an ESTIMATE (see `fit.largest_batch_estimate`)
    eval: StepReport | None = None
    eval_global_batch: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def all_reduce_total(self) -> int:
        return sum(self.all_reduce.values())

    @property
    def measured_gradient_bytes(self) -> int:
        """The compiled step's all-reduce bytes less BatchNorm's statistics."""
        return self.all_reduce_total - self.statistics_bytes

    @property
    def gradients_reduced_once(self) -> bool:
        """Whether the step sends each parameter's gradient once (within 1%)."""
        expected = sum(self.gradient_bytes.values())
        return abs(self.measured_gradient_bytes - expected) <= 0.01 * expected


def _cost(executable) -> dict:
    cost = executable.cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def describe(config) -> str:
    fields = {field: config[field] for field in ("share", "stage_impl", "bn_group_size")}
    fields["remat_policy"] = remat_policy(config)
    fields["grad_reduce_dtype"] = config.grad_reduce_dtype
    return ", ".join([config.model, config.dtype] + [
        f"{field}={value}" for field, value in fields.items() if value not in (None, "none", 0)])


def plan(config, topology: str, *, include_eval: bool = True,
         compiler_options: dict | None = None, search_fit: bool = True) -> Plan:
    """Compiles the config's train (and eval) step for `topology` and gathers the report.
    Raises PlanError (bad input) or DoesNotFit (with what would fit)."""
    cluster = cluster_for(topology)
    device = cluster.accelerator
    batch = per_device(config.batch_size, cluster, "batch_size")
    validation.check_bn_groups(config, cluster.num_devices)
    built = build_steps(config, cluster)
    fixed = state_bytes(built.state)
    try:
        train = compile_step(built.train_step, built.state, built.train_batch,
                             compiler_options=compiler_options, capacity=device.usable_bytes)
    except OutOfMemory as oom:
        raise does_not_fit(config, cluster, batch, oom, fixed, compiler_options, search_fit,
                           build_steps) from None
    cost = _cost(train.executable)
    hlo = train.executable.as_text()
    image_shape = built.info.image_shape
    flops = train_flops_per_device(built.model, image_shape, batch)
    reduce = all_reduce_bytes(hlo)
    scanned = built.model.stage_impl == "scan"
    hbm_bytes = None if scanned else cost.get("bytes accessed")
    result = Plan(
        config_summary=describe(config), target=cluster, global_batch=config.batch_size,
        train=StepReport(batch, train, flops, None if scanned else cost.get("flops")),
        all_reduce=reduce, other_collectives=other_collectives(hlo),
        estimate=roofline(cluster, flops, hbm_bytes, sum(reduce.values())),
        num_params=count_params(built.state.params), grad_reduce_dtype=config.grad_reduce_dtype,
        gradient_bytes=gradient_bytes_by_kind(built.state.params, config.grad_reduce_dtype),
        statistics_bytes=statistics_bytes(built.model, built.state.batch_stats, batch),
        forward_passes=forward_passes(built.model),
        largest_batch=largest_batch_estimate(batch, train.memory.total, fixed,
                                             device.usable_bytes))
    if scanned and device.kind == "tpu":
        result.notes.append("stage_impl=scan: XLA's cost analysis counts a scan body once, so "
                            "its FLOP and HBM-byte figures are left out")
    if include_eval:
        _plan_eval(config, built, result, compiler_options, scanned)
    return result


def _plan_eval(config, built: Steps, result: Plan, compiler_options: dict | None,
               scanned: bool) -> None:
    cluster = result.target
    device, n = cluster.accelerator, cluster.num_devices
    eval_batch = built.eval_batch["image"].shape[0]
    if eval_batch != config.eval_batch_size:
        result.notes.append(f"eval_batch_size={config.eval_batch_size} rounded up to "
                            f"{eval_batch}, a multiple of the {n} {device.unit}s")
    try:
        compiled = compile_step(built.eval_step, built.state, built.eval_batch,
                                compiler_options=compiler_options, capacity=device.usable_bytes)
    except OutOfMemory as oom:
        raise DoesNotFit(f"the eval step ({eval_batch // n} images per {device.unit}) needs "
                         f"{gib(oom.needed)} per {device.unit}; a {device.name} {device.unit} "
                         f"has {gib(oom.available or device.usable_bytes)} usable: lower "
                         "--config.eval_batch_size") from None
    result.eval = StepReport(eval_batch // n, compiled,
                             eval_flops_per_device(built.model, built.info.image_shape,
                                                   eval_batch // n),
                             None if scanned else _cost(compiled.executable).get("flops"))
    result.eval_global_batch = eval_batch
