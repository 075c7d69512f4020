"""What a config describes, built in one place: the dataset's description, the model, the step
counts, the optimizer and the two jitted steps over the device mesh.

`trainer.train_and_evaluate` runs what `build_run` returns; the TPU planner compiles the very
same steps for a topology it does not have. Free of TensorFlow: real datasets are opened by the
data layer, imported only when a run needs one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import optax
from jax.sharding import Mesh

from sharesnet_jax.data import synthetic
from sharesnet_jax.data.info import DatasetInfo, num_eval_batches, steps_per_epoch
from sharesnet_jax.errors import UserError
from sharesnet_jax.models import create_model, model_spec
from sharesnet_jax.training import optim, sharding
from sharesnet_jax.training.config import DTYPES, remat_policy
from sharesnet_jax.training.steps import jit_on_mesh, make_eval_step, make_train_step

# Config fields that set module fields of the model; unset (None) keeps the registry's value.
MODEL_FIELDS = ("share", "dropout_rate", "stage_impl", "remat_policy", "bn_group_size")


def build_model(config: Any, num_classes: int) -> nn.Module:
    """The model `config` names (a ConfigDict, or the dict a checkpoint's record holds)."""
    overrides = {"dtype": DTYPES[config["dtype"]]}
    fields = {field: config[field] for field in MODEL_FIELDS}
    fields["remat_policy"] = remat_policy(config)
    for field, value in fields.items():
        if value is not None:
            overrides[field] = value
    try:
        return create_model(config["model"], num_classes=num_classes, **overrides)
    except ValueError as err:
        raise UserError(str(err)) from None


def load_dataset_info(config) -> DatasetInfo:
    """The dataset's description; synthetic data takes the model family's input and classes."""
    if config.dataset == synthetic.NAME:
        family = model_spec(config.model).family
        return synthetic.synthetic_info(config.image_size or family.image_size,
                                        config.num_classes or family.num_classes)
    # TensorFlow: imported only for real data.
    from sharesnet_jax.data import checks, pipeline, sources

    try:
        with checks.readable_files(config.dataset, config.data_dir):
            source = sources.open_source(config.dataset, config.data_dir,
                                         download=config.download, manual_dir=config.manual_dir)
            return pipeline.load_info(source, train_split=config.train_split,
                                      eval_split=config.eval_split, augment=config.augment,
                                      image_size=config.image_size)
    except UserError:
        raise
    except ValueError as err:
        raise UserError(str(err)) from None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Step counts of a run, derived once from the config and the dataset size."""

    steps_per_epoch: int
    total_steps: int
    eval_every_steps: int
    eval_batches: int


def plan_steps(config, info: DatasetInfo) -> Plan:
    per_epoch = max(steps_per_epoch(info, config.batch_size), 1)
    total = config.num_train_steps if config.num_train_steps > 0 else int(
        round(config.num_epochs * per_epoch))
    eval_every = config.eval_every_steps or per_epoch * max(int(config.eval_every_epochs), 1)
    return Plan(per_epoch, total, eval_every, num_eval_batches(info, config.eval_batch_size))


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything a run computes with, before any array exists."""

    info: DatasetInfo
    model: nn.Module
    plan: Plan
    mesh: Mesh
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    train_step: Callable  # jitted: (state, batch) -> (state, metrics); donates the state
    eval_step: Callable  # jitted: (state, batch) -> sums


def build_run(config, info: DatasetInfo, devices: Sequence[Any] | None = None) -> Run:
    """The run `config` describes over `devices` (default: every device of every process)."""
    model = build_model(config, info.num_classes)
    plan = plan_steps(config, info)
    mesh = sharding.make_data_mesh(list(devices) if devices is not None else None)
    schedule = optim.learning_rate_schedule(config, plan.steps_per_epoch, plan.total_steps)
    tx = optim.create_optimizer(config, schedule)
    train_step = jit_on_mesh(
        make_train_step(model, tx, schedule, info.mean, info.std, config.label_smoothing,
                        skip_nonfinite=config.skip_nonfinite,
                        grad_reduce_dtype=config.grad_reduce_dtype, mesh=mesh),
        mesh, donate_state=True)
    eval_step = jit_on_mesh(make_eval_step(model, info.mean, info.std), mesh, donate_state=False)
    return Run(info, model, plan, mesh, schedule, tx, train_step, eval_step)
