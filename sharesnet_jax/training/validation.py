"""Checks of a run's input that fail in milliseconds, before any dataset, model or compilation
work, each with a one-line message naming the bad value and what is accepted."""

from __future__ import annotations

import difflib
import math
import os
import tempfile

import jax

from sharesnet_jax.data.info import AUGMENT_CHOICES
from sharesnet_jax.errors import UserError
from sharesnet_jax.models import (
    REMAT_POLICIES, SHARE_MODES, STAGE_IMPLS, list_models, model_spec,
)
from sharesnet_jax.training import optim
from sharesnet_jax.training.config import DTYPES, base_config, remat_policy
from sharesnet_jax.training.steps import GRAD_REDUCE_DTYPES


def _choices(values) -> str:
    return ", ".join(map(repr, values))


def _one_of(config, field: str, accepted, allow_none: bool = False) -> None:
    value = config[field]
    if value is None and allow_none:
        return
    if value not in accepted:
        close = difflib.get_close_matches(str(value), list(map(str, accepted)), n=3, cutoff=0.5)
        hint = f" (did you mean {_choices(close)}?)" if close else ""
        raise UserError(f"{field}={value!r} is not one of {_choices(accepted)}{hint}")


def check_fields(config) -> None:
    """Unknown fields and values of the wrong type, for configs built in Python (the command
    line's `--config.x=y` is type-checked by ml_collections already)."""
    reference = base_config()
    for field in config.keys():
        if field not in reference:
            close = difflib.get_close_matches(field, list(reference.keys()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown config field {field!r}{hint}")
        expected = reference[field]
        value = config[field]
        if expected is None or value is None:
            continue
        accepted = {float: (float, int), tuple: (tuple, list)}.get(type(expected), type(expected))
        if isinstance(expected, bool) != isinstance(value, bool) or not isinstance(value, accepted):
            raise UserError(f"config field {field}={value!r} should be of type "
                            f"{type(expected).__name__}, not {type(value).__name__}")
        if isinstance(expected, tuple) and all(_is_number(x) for x in expected):
            bad = [x for x in value if not _is_number(x)]
            if bad:
                raise UserError(f"config field {field}={tuple(value)!r} holds {bad[0]!r}: "
                                "every element must be a number")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(config, field: str, low: float, high: float | None = None,
                 high_open: bool = False) -> None:
    """`low <= value` (and `value < high` or `<= high`), finite; None is left to the default."""
    value = config[field]
    if value is None:
        return
    above = high is None or (value < high if high_open else value <= high)
    if not (math.isfinite(value) and value >= low and above):
        accepted = f">= {low:g}" if high is None else (
            f"in [{low:g}, {high:g}{')' if high_open else ']'}")
        raise UserError(f"{field}={value!r} must be a finite number {accepted}")


def check_bn_groups(config, devices: int) -> None:
    """BatchNorm groups against the batch split over `devices` (this machine's, or the planned
    slice's chips)."""
    if config.bn_group_size < 0 or (config.bn_group_size
                                    and config.batch_size % config.bn_group_size):
        raise UserError(f"bn_group_size={config.bn_group_size!r} must divide batch_size="
                        f"{config.batch_size} (or be 0: statistics over the whole batch)")
    group, per_device = config.bn_group_size, config.batch_size // devices
    if not group or per_device % group == 0:
        return  # whole-batch statistics, or groups within each device
    if group % per_device or devices % (group // per_device):
        raise UserError(f"bn_group_size={group} must divide the per-device batch ({per_device}) "
                        f"or span a whole number of devices that divides the {devices} "
                        "(groups are formed on consecutive devices)")


def check_config(config) -> None:
    check_fields(config)
    _one_of(config, "model", list_models())
    _one_of(config, "share", SHARE_MODES, allow_none=True)
    _one_of(config, "stage_impl", STAGE_IMPLS, allow_none=True)
    _one_of(config, "remat_policy", REMAT_POLICIES, allow_none=True)
    remat_policy(config)  # the older `remat` must not contradict it
    _one_of(config, "dtype", DTYPES)
    _one_of(config, "optimizer", optim.OPTIMIZERS)
    _one_of(config, "schedule", optim.SCHEDULES)
    _one_of(config, "augment", AUGMENT_CHOICES)
    _one_of(config, "grad_reduce_dtype", GRAD_REDUCE_DTYPES)
    if not isinstance(config.dataset, str) or not config.dataset:
        raise UserError(f"dataset={config.dataset!r} must be a TFDS name, 'digits' or 'synthetic'")
    devices = jax.device_count()
    for field in ("batch_size", "eval_batch_size"):
        value = config[field]
        if value < 1 or value % devices:
            raise UserError(f"{field}={value!r} must be a positive multiple of the {devices} "
                            "devices (it is the global batch, split evenly over them)")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if config[field] < 1:
            raise UserError(f"{field}={config[field]!r} must be at least 1")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise UserError(f"num_epochs={config.num_epochs!r} must be positive when "
                        "num_train_steps is not set (> 0)")
    for field in ("learning_rate", "weight_decay", "warmup_epochs"):
        _check_range(config, field, 0.0)
    _check_range(config, "momentum", 0.0, 1.0, high_open=True)
    _check_range(config, "label_smoothing", 0.0, 1.0, high_open=True)
    _check_range(config, "dropout_rate", 0.0, 1.0, high_open=True)
    _check_range(config, "lr_decay_factor", 0.0)
    if config.shuffle_buffer < 0:
        raise UserError(f"shuffle_buffer={config.shuffle_buffer!r} must be positive (1: no "
                        "shuffling), or 0 for a full permutation of the training split each epoch")
    check_bn_groups(config, devices)
    if config.data_dir and os.path.exists(config.data_dir) and not os.path.isdir(
            config.data_dir):
        raise UserError(f"data_dir={config.data_dir!r} is a file, not a directory of datasets")
    check_image_size(config)


def check_image_size(config) -> None:
    size = config.image_size
    if size is None:
        return
    smallest = model_spec(config.model).family.min_image_size
    if size < smallest:
        raise UserError(f"image_size={size!r} is too small for {config.model}: it takes images "
                        f"of at least {smallest}x{smallest}")


def check_plan(config, info, plan) -> None:
    """Against the dataset: a batch the split can fill, and a run of at least one step."""
    examples = info.num_train_examples
    if examples and config.batch_size > examples and not config.eval_only:
        raise UserError(f"batch_size={config.batch_size} is larger than the {examples} training "
                        f"examples of {info.name!r} (split {config.train_split!r}): lower it")
    if plan.total_steps < 1 and not config.eval_only:
        raise UserError(f"the run trains 0 steps (num_epochs={config.num_epochs!r} of "
                        f"{plan.steps_per_epoch} steps, num_train_steps="
                        f"{config.num_train_steps!r}): give at least one step")


# What may change between runs in one workdir: bookkeeping, the run's length, where the data
# lives, and how evaluation batches or memory are arranged. Every other field (the model, its
# sharing and layout, dtype, the optimizer and its hyper-parameters, the schedule, the data
# order and augmentation: seed, batch_size, dataset, shuffle_buffer...) would change what the
# checkpointed state means or the sequence of steps a resumed run takes, so a change refuses.
RESUMABLE_CHANGES = frozenset({
    "log_every_steps", "eval_every_epochs", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_only", "num_epochs", "num_train_steps", "data_dir", "download",
    "manual_dir", "eval_split", "eval_batch_size", "init_from", "remat", "remat_policy",
    "skip_nonfinite",
    "grad_reduce_dtype",
})


def check_resume(stored: dict, config, where: str) -> None:
    """A readable checkpoint of another config is the user's mistake: one line naming every
    field that differs (and may not), instead of a silent restart or resume."""
    reference = base_config()
    differ = []
    for field in sorted(config.keys()):
        if field in RESUMABLE_CHANGES:
            continue
        before = stored.get(field, reference[field] if field in reference else None)
        now = config[field]
        if isinstance(before, list):
            before = tuple(before)
        if isinstance(now, list):
            now = tuple(now)
        if before != now:
            differ.append(f"{field}={before!r} there, {now!r} now")
    if differ:
        raise UserError(f"{where} was written with another config ({'; '.join(differ)}): rerun "
                        "with the checkpoint's values or use another --workdir (only "
                        "bookkeeping, length and data location may change between runs)")


def check_results_path(workdir: str) -> None:
    """results.json is written at the end: a path that cannot take it fails now, not then."""
    path = os.path.join(workdir, "results.json")
    problem = "it is a directory" if os.path.isdir(path) else None
    if problem is None and os.path.lexists(path):
        try:
            with open(path, "a"):  # appends nothing: only asks whether it could be written
                pass
        except OSError as err:
            problem = err.strerror or str(err)
    if problem:
        raise UserError(f"{path} cannot be written ({problem}): remove it or use another "
                        "--workdir")


def check_workdir(workdir: str) -> str:
    """An absolute, writable workdir, created if needed."""
    if not workdir:
        raise UserError("workdir is empty: give --workdir=DIR, a directory this process can write")
    path = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"workdir {workdir!r} cannot be written ({err.strerror or err})") from None
    return path
