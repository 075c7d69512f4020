"""The plan: the trainer's own train and eval steps (built by `run_setup.build_run`) compiled for
a TPU slice with abstract state and batch, and the figures a user needs before renting it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from sharesnet_jax.data import synthetic
from sharesnet_jax.data.info import KNOWN_NUM_CLASSES, KNOWN_TRAIN_EXAMPLES, DatasetInfo
from sharesnet_jax.models import REMAT_POLICIES, model_spec
from sharesnet_jax.models.stats import count_params, forward_macs
from sharesnet_jax.training import sharding, validation
from sharesnet_jax.training.config import remat_policy
from sharesnet_jax.training.run_setup import build_run
from sharesnet_jax.training.steps import GRAD_REDUCE_DTYPES, create_train_state
from sharesnet_jax.training.tpu.chips import (
    Chip, DoesNotFit, PlanError, Slice, gib, refuse_known_compiler_crash, tpu_slice,
)
from sharesnet_jax.training.tpu.compile import Compiled, compile_step
from sharesnet_jax.training.tpu.hlo import OutOfMemory, all_reduce_bytes, other_collectives


def planned_dataset(config) -> DatasetInfo:
    """The dataset's shapes without opening TFDS: `image_size` or the model family's, classes
    from the datasets the recipes name (or, for synthetic data, the config). Mean and std are
    constants in the program, not part of its cost."""
    family = model_spec(config.model).family
    name = config.dataset.split(":")[0]
    if config.dataset == synthetic.NAME:
        num_classes, num_train = config.num_classes or family.num_classes, 50_000
    elif name in KNOWN_NUM_CLASSES:
        num_classes, num_train = KNOWN_NUM_CLASSES[name], KNOWN_TRAIN_EXAMPLES[name]
    else:
        raise PlanError(f"the planner does not know dataset {config.dataset!r} (known: "
                        f"{', '.join(KNOWN_NUM_CLASSES)}): plan it as --config.dataset=synthetic "
                        "--config.num_classes=N")
    return synthetic.synthetic_info(config.image_size or family.image_size, num_classes,
                                    num_train_examples=num_train)


def per_chip(global_batch: int, chips: int, field: str) -> int:
    if global_batch < chips or global_batch % chips:
        raise PlanError(f"{field}={global_batch} must be a positive multiple of the {chips} "
                        "chips (it is the global batch, split evenly over them)")
    return global_batch // chips


def rounded_eval_batch(eval_batch: int, chips: int) -> int:
    """The eval batch must split over the chips too; rounding up is what a user would do."""
    return -(-eval_batch // chips) * chips


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


def build_steps(config, tpu: Slice, *, batch_size: int | None = None) -> Steps:
    """The trainer's steps (`run_setup.build_run`, the code `train_and_evaluate` runs) on a mesh
    of the slice's devices; `batch_size` overrides the config's global batch (the fit search)."""
    info = planned_dataset(config)
    run = build_run(config, info, devices=tpu.devices)
    batch = batch_size or config.batch_size
    eval_batch = rounded_eval_batch(config.eval_batch_size, tpu.chips)
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


def train_flops_per_chip(model, image_shape, per_chip_batch: int) -> int:
    """Our own count, not XLA's (whose cost analysis counts a scan body once): 2 FLOPs per
    multiply-add of the forward pass, times `forward_passes`."""
    return 2 * forward_macs(model, tuple(image_shape)) * per_chip_batch * forward_passes(model)


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


def statistics_bytes(model, batch_stats, per_chip_batch: int) -> int:
    """BatchNorm's float32 all-reduces: the mean and mean square of every BatchNorm, averaged
    over the chips in the forward pass and their cotangents in the backward one (4 B x 2 per
    statistic); `bn_group_size` groups within a chip reduce only their running averages
    (4 B x 1); groups spanning chips reduce their statistics within the group, forward and
    backward, and their running averages over all chips (4 B x 3; models/batch_norm.py)."""
    statistics = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(batch_stats))
    group = model.bn_group_size
    if not group:
        return 8 * statistics
    if group <= per_chip_batch:
        return 4 * statistics
    return 12 * statistics


def eval_flops_per_chip(model, image_shape, per_chip_batch: int) -> int:
    return 2 * forward_macs(model, tuple(image_shape)) * per_chip_batch


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


def ring_all_reduce_seconds(nbytes: int, chips: int, ici_bandwidth: float) -> float:
    """A ring all-reduce sends (and receives) 2(n-1)/n of the buffer per chip; a chip can send
    at half its bidirectional ICI bandwidth. Assumes every link is used."""
    if chips <= 1:
        return 0.0
    return 2 * (chips - 1) / chips * nbytes / (ici_bandwidth / 2)


def roofline(chip: Chip, flops: float, hbm_bytes_accessed: float | None, all_reduce: int,
             chips: int) -> Roofline:
    hbm = hbm_bytes_accessed / chip.hbm_bandwidth if hbm_bytes_accessed else None
    return Roofline(flops / chip.peak_bf16_flops, hbm,
                    ring_all_reduce_seconds(all_reduce, chips, chip.ici_bandwidth))


# ---------------------------------------------------------------------------------------------
# The plan.


@dataclasses.dataclass
class StepReport:
    per_chip_batch: int
    compiled: Compiled
    flops: int  # per chip per step, our count
    xla_flops: float | None  # compiled.cost_analysis(), for comparison


@dataclasses.dataclass
class Plan:
    config_summary: str
    tpu: Slice
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
    Raises PlanError (bad input) or DoesNotFit (with the largest fitting batch found)."""
    tpu = tpu_slice(topology)
    batch = per_chip(config.batch_size, tpu.chips, "batch_size")
    validation.check_bn_groups(config, tpu.chips)
    refuse_known_compiler_crash(tpu.chip.generation)
    built = build_steps(config, tpu)
    try:
        train = compile_step(built.train_step, built.state, built.train_batch,
                             compiler_options=compiler_options, capacity=tpu.chip.hbm_usable)
    except OutOfMemory as oom:
        raise does_not_fit(config, tpu, batch, oom, compiler_options, search_fit) from None
    cost = _cost(train.executable)
    hlo = train.executable.as_text()
    image_shape = built.info.image_shape
    flops = train_flops_per_chip(built.model, image_shape, batch)
    reduce = all_reduce_bytes(hlo)
    scanned = built.model.stage_impl == "scan"
    result = Plan(
        config_summary=describe(config), tpu=tpu, global_batch=config.batch_size,
        train=StepReport(batch, train, flops, None if scanned else cost.get("flops")),
        all_reduce=reduce, other_collectives=other_collectives(hlo),
        estimate=roofline(tpu.chip, flops, None if scanned else cost.get("bytes accessed"),
                          sum(reduce.values()), tpu.chips),
        num_params=count_params(built.state.params), grad_reduce_dtype=config.grad_reduce_dtype,
        gradient_bytes=gradient_bytes_by_kind(built.state.params, config.grad_reduce_dtype),
        statistics_bytes=statistics_bytes(built.model, built.state.batch_stats, batch),
        forward_passes=forward_passes(built.model))
    if scanned:
        result.notes.append("stage_impl=scan: XLA's cost analysis counts a scan body once, so "
                            "its FLOP and HBM-byte figures are left out")
    if include_eval:
        eval_batch = built.eval_batch["image"].shape[0]
        if eval_batch != config.eval_batch_size:
            result.notes.append(f"eval_batch_size={config.eval_batch_size} rounded up to "
                                f"{eval_batch}, a multiple of the {tpu.chips} chips")
        try:
            compiled = compile_step(built.eval_step, built.state, built.eval_batch,
                                    compiler_options=compiler_options,
                                    capacity=tpu.chip.hbm_usable)
        except OutOfMemory as oom:
            raise DoesNotFit(f"the eval step ({eval_batch // tpu.chips} images per chip) needs "
                             f"{gib(oom.needed)} of HBM per chip; a {tpu.chip.generation} chip "
                             f"has {gib(oom.available)}: lower --config.eval_batch_size"
                             ) from None
        result.eval = StepReport(eval_batch // tpu.chips, compiled,
                                 eval_flops_per_chip(built.model, image_shape,
                                                     eval_batch // tpu.chips),
                                 None if scanned else _cost(compiled.executable).get("flops"))
        result.eval_global_batch = eval_batch
    return result


def fits(config, tpu: Slice, *, batch_size: int, compiler_options: dict | None = None,
         **overrides) -> bool:
    """Whether the train step compiles within HBM at this global batch (and config fields)."""
    trial = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
        else dict(config)
    with _unlocked(trial):
        for key, value in overrides.items():
            trial[key] = value
    built = build_steps(trial, tpu, batch_size=batch_size)
    try:
        compile_step(built.train_step, built.state, built.train_batch,
                     compiler_options=compiler_options, capacity=tpu.chip.hbm_usable)
        return True
    except OutOfMemory:
        return False


def largest_fitting_batch(config, tpu: Slice, per_chip_batch: int, oom: OutOfMemory,
                          compiler_options: dict | None = None) -> int | None:
    """The largest power-of-two per-chip batch below `per_chip_batch` that compiles. Starts
    where memory scaled linearly with the batch would fit (from XLA's own figures), then halves."""
    candidate = per_chip_batch // 2
    if oom.needed and oom.available:
        linear = int(per_chip_batch * oom.available / oom.needed)
        candidate = min(candidate, 2 ** int(math.log2(linear))) if linear >= 1 else 1
    while candidate >= 1:
        if fits(config, tpu, batch_size=candidate * tpu.chips, compiler_options=compiler_options):
            return candidate
        candidate //= 2
    return None


def does_not_fit(config, tpu: Slice, per_chip_batch: int, oom: OutOfMemory,
                 compiler_options: dict | None, search: bool) -> DoesNotFit:
    """The one-line verdict: what the step needs, what the chip has, and what would fit."""
    chip = tpu.chip.generation
    has = f"{gib(oom.available or tpu.chip.hbm_usable)} usable"
    head = (f"{config.model} at {per_chip_batch} images per chip needs "
            f"{gib(oom.needed) if oom.needed else 'more HBM than'} per chip; a {chip} chip has "
            f"{has}")
    if not search:
        return DoesNotFit(f"{head}: lower --config.batch_size or set "
                          "--config.remat_policy=conv_outputs (or full)")
    options = []
    fitting = largest_fitting_batch(config, tpu, per_chip_batch, oom, compiler_options)
    if fitting:
        options.append(f"--config.batch_size={fitting * tpu.chips} ({fitting} per chip) fits")
    # Cheapest first: 'conv_outputs' recomputes no convolution, 'full' a whole forward pass.
    current = REMAT_POLICIES.index(remat_policy(config) or "none")
    for policy in REMAT_POLICIES[current + 1:]:
        if fits(config, tpu, batch_size=config.batch_size, compiler_options=compiler_options,
                remat_policy=policy, remat=None):
            options.append(f"--config.remat_policy={policy} fits at this batch")
            break
    if not options:
        return DoesNotFit(f"{head}: not even 1 image per chip fits; use a larger chip")
    return DoesNotFit(f"{head}: {' or '.join(options)}")


class _unlocked:
    """ml_collections' `unlocked()` for a ConfigDict; nothing for a dict."""

    def __init__(self, config):
        self._context = config.unlocked() if hasattr(config, "unlocked") else None

    def __enter__(self):
        return self._context.__enter__() if self._context else None

    def __exit__(self, *exc):
        return self._context.__exit__(*exc) if self._context else False
