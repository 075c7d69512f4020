"""Checks of a run's input that fail in milliseconds, before any dataset, model or compilation
work, each with a one-line message naming the bad value and what is accepted."""

from __future__ import annotations

import difflib
import math
import os
import stat
import tempfile

import jax

from sharesnet_jax import safe_files
from sharesnet_jax.data import synthetic
from sharesnet_jax.data.info import AUGMENT_CHOICES
from sharesnet_jax.errors import UserError, not_one_of
from sharesnet_jax.models import (
    REMAT_POLICIES, SHARE_MODES, STAGE_IMPLS, list_models, model_spec,
)
from sharesnet_jax.training import optim
from sharesnet_jax.training.config import DTYPES, base_config, remat_policy
from sharesnet_jax.training.steps import GRAD_REDUCE_DTYPES


def _one_of(config, field: str, accepted, allow_none: bool = False) -> None:
    value = config[field]
    if value is None and allow_none:
        return
    if value not in accepted:
        close = difflib.get_close_matches(str(value), list(map(str, accepted)), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise UserError(not_one_of(field, value, accepted) + hint)


def check_fields(config) -> None:
    """Unknown fields, values of the wrong type and `None` where the field has no unset meaning,
    for configs built in Python (the command line's `--config.x=y` is type-checked by
    ml_collections already). Types come from the schema: a placeholder's declared type too."""
    reference = base_config()
    for field in config.keys():
        if field not in reference:
            close = difflib.get_close_matches(field, list(reference.keys()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown config field {field!r}{hint}")
        default, value = reference[field], config[field]
        expected = reference.get_ref(field).get_type()
        if value is None:
            if default is None:
                continue  # a placeholder: unset keeps the documented default
            raise UserError(f"config field {field}=None has no meaning: give a "
                            f"{expected.__name__} (the default is {default!r})")
        accepted = {float: (float, int), tuple: (tuple, list)}.get(expected, expected)
        if (expected is bool) != isinstance(value, bool) or not isinstance(value, accepted):
            raise UserError(f"config field {field}={value!r} should be of type "
                            f"{expected.__name__}, not {type(value).__name__}")
        if isinstance(default, tuple) and all(_is_number(x) for x in default):
            bad = [x for x in value if not _is_number(x)]
            if bad:
                raise UserError(f"config field {field}={tuple(value)!r} holds {bad[0]!r}: "
                                "every element must be a number")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(config, field: str, low: float, high: float | None = None,
                 high_open: bool = False, low_open: bool = False) -> None:
    """`low <= value` (or `<`) and `value < high` (or `<=`), finite; None is left to the
    default."""
    value = config[field]
    if value is None:
        return
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    if not (math.isfinite(value) and above and below):
        if high is None:
            accepted = f"{'>' if low_open else '>='} {low:g}"
        else:
            accepted = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                        f"{')' if high_open else ']'}")
        raise UserError(f"{field}={value!r} must be a finite number {accepted}")


# The seed feeds JAX's PRNGKey (32-bit words without jax_enable_x64, where larger seeds wrap
# onto smaller ones) and TensorFlow's stateless ops: one range that means the same to both.
MAX_SEED = 2**31 - 1


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
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                  "learning_rate_batch_size", "eval_every_epochs"):
        if config[field] < 1:
            raise UserError(f"{field}={config[field]!r} must be at least 1")
    if config.eval_every_steps < 0:
        raise UserError(f"eval_every_steps={config.eval_every_steps!r} must be positive, or 0 to "
                        "evaluate every eval_every_epochs epochs")
    if config.num_train_steps == 0 or config.num_train_steps < -1:
        raise UserError(f"num_train_steps={config.num_train_steps!r} must be positive, or -1 to "
                        "train num_epochs epochs")
    _check_range(config, "num_epochs", 0.0)
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise UserError(f"num_epochs={config.num_epochs!r} must be positive when "
                        "num_train_steps is not set (> 0)")
    if not 0 <= config.seed <= MAX_SEED:
        raise UserError(f"seed={config.seed!r} must be an integer in [0, {MAX_SEED}]")
    for field in ("learning_rate", "weight_decay", "warmup_epochs", "color_jitter",
                  "pca_lighting"):
        _check_range(config, field, 0.0)
    _check_range(config, "momentum", 0.0, 1.0, high_open=True)
    _check_range(config, "label_smoothing", 0.0, 1.0, high_open=True)
    _check_range(config, "dropout_rate", 0.0, 1.0, high_open=True)
    _check_range(config, "lr_decay_factor", 0.0, 1.0, low_open=True)
    bad_epochs = [e for e in config.lr_decay_epochs if not (math.isfinite(e) and e >= 0)]
    if bad_epochs:
        raise UserError(f"lr_decay_epochs={tuple(config.lr_decay_epochs)!r} holds "
                        f"{bad_epochs[0]!r}: every element must be a finite number of completed "
                        "epochs >= 0")
    if config.shuffle_buffer < 0:
        raise UserError(f"shuffle_buffer={config.shuffle_buffer!r} must be positive (1: no "
                        "shuffling), or 0 for a full permutation of the training split each epoch")
    if config.num_classes is not None and config.num_classes < 1:
        raise UserError(f"num_classes={config.num_classes!r} must be at least 1")
    for field in ("train_split", "eval_split"):
        if config[field] is not None and not config[field].strip():
            raise UserError(f"{field}={config[field]!r} is empty: give a split name such as "
                            "'train' or 'test[:50%]'" + (
                                " (or leave it unset: 'test', else 'validation')"
                                if field == "eval_split" else ""))
    check_bn_groups(config, devices)
    if config.data_dir and os.path.exists(config.data_dir) and not os.path.isdir(
            config.data_dir):
        raise UserError(f"data_dir={config.data_dir!r} is a file, not a directory of datasets")
    for field in ("init_from", "manual_dir"):
        if config[field] and not os.path.exists(config[field]):
            raise UserError(f"{field}={config[field]!r} does not exist")
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
    if config.num_classes is not None and info.name != synthetic.NAME and (
            config.num_classes != info.num_classes):
        raise UserError(f"num_classes={config.num_classes} contradicts dataset {info.name!r}, "
                        f"which has {info.num_classes} classes: leave num_classes unset (it is "
                        "for synthetic data)")
    if info.num_eval_examples < 1:
        raise UserError(f"the evaluation split of {info.name!r} (eval_split="
                        f"{config.eval_split!r}) selects no examples: give a split that holds "
                        "some, e.g. --config.eval_split=test")
    examples = info.num_train_examples
    if examples < 1 and not config.eval_only:
        raise UserError(f"the training split {config.train_split!r} of {info.name!r} selects no "
                        "examples: give a split that holds some")
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
    """results.json is written at the end: a path that cannot take it fails now, not then. It
    is replaced by a rename (`safe_files.write_atomically`), so a link or anything but a regular
    file there is refused; the check opens it without following a link or blocking on a FIFO."""
    path = os.path.join(workdir, "results.json")
    problem = None
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        problem = err.strerror or str(err)
    else:
        if not stat.S_ISREG(mode):
            problem = f"it is {safe_files.kind_of(mode)}"
    if problem is None:
        try:  # appends nothing: only asks whether it could be written
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK))
        except OSError as err:
            problem = err.strerror or str(err)
    if problem:
        raise UserError(f"{path} cannot be written ({problem}): remove it or use another "
                        "--workdir")


def check_workdir_entries(workdir: str) -> None:
    """What a run writes into the workdir must not lead elsewhere: `checkpoints/` (and its
    step directories, which Orbax deletes when they grow old) and `checkpoints.skipped/` must
    be real directories, not links into another user's files."""
    for name in ("checkpoints", "checkpoints.skipped"):
        safe_files.refuse_link_or_file(os.path.join(workdir, name))
    directory = os.path.join(workdir, "checkpoints")
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if os.path.islink(os.path.join(directory, name)):
                safe_files.refuse_link_or_file(os.path.join(directory, name))


def check_workdir(workdir: str) -> str:
    """An absolute, writable workdir, created if needed."""
    if not workdir:
        raise UserError("workdir is empty: give --workdir=DIR, a directory this process can write")
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.dirname(path) == path:
        raise UserError(f"workdir {workdir!r} is the root of the filesystem: give a directory of "
                        "the run's own, e.g. --workdir=/tmp/run1")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"workdir {workdir!r} cannot be written ({err.strerror or err})") from None
    return path
