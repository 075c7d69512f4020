"""What the trainer needs to know about a dataset, and the step counts that follow from it, in
a module free of TensorFlow so the synthetic (benchmark) path needs no TF import."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from sharesnet_jax.data import digits

# Training augmentation styles a pipeline applies; a config may also say 'auto' (chosen from the
# dataset: ImageNet style for ImageNet and any dataset of variable-size images, else CIFAR style).
AUGMENT_STYLES = ('cifar', 'imagenet', 'none')
AUGMENT_CHOICES = ('auto', *AUGMENT_STYLES)

# Classes of the datasets the recipes name, known without opening them (planning a run whose
# data is not on this machine); any other dataset states its own when opened.
KNOWN_NUM_CLASSES = {'digits': digits.NUM_CLASSES, 'cifar10': 10, 'cifar100': 100,
                     'imagenet2012': 1000}
KNOWN_TRAIN_EXAMPLES = {'digits': digits.NUM_TRAIN_EXAMPLES, 'cifar10': 50_000,
                        'cifar100': 50_000, 'imagenet2012': 1_281_167}

# Per-channel (mean, std), 0..1 units, that the paper's training codes normalised with. The Wide
# ResNet code (train.lua L57-66) uses CIFAR-10's mean {125.3, 123.0, 113.9} / std
# {63.0, 62.1, 66.7} (0..255) for CIFAR-100 too; fb.resnet.torch's ColorNormalize holds
# ImageNet's. Any other dataset is measured on its first training images.
_CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
KNOWN_MEAN_STD = {
    'cifar10': _CIFAR10_MEAN_STD,
    'cifar100': _CIFAR10_MEAN_STD,
    'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset, independent of TF."""

    name: str  # As the user named it ('digits' for the embedded one).
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the images the pipeline yields.
    num_train_examples: int  # Whole train split, all processes.
    num_eval_examples: int  # Whole eval split, all processes.
    mean: tuple[float, ...]  # Per-channel, 0..255 units, for on-device normalisation.
    std: tuple[float, ...]
    augment: str  # 'cifar', 'imagenet' or 'none' (training augmentation actually used).
    class_names: tuple[str, ...]
    # The opened dataset (a data.sources.Source) the pipelines read, kept here so that a run opens
    # it once; None for synthetic data and for plans. Not part of what the record describes.
    source: Any = dataclasses.field(default=None, compare=False, repr=False)


def _check_batch(global_batch_size: int) -> None:
    if global_batch_size <= 0:
        raise ValueError(f'global_batch_size must be positive, got {global_batch_size}.')


def steps_per_epoch(info: DatasetInfo, global_batch_size: int) -> int:
    """Training steps per epoch, identical on every process (remainder dropped).

    Each process holds at least floor(n / process_count) examples, and
    floor(floor(n / P) / (B / P)) == floor(n / B), so the global formula is every process's count.
    """
    _check_batch(global_batch_size)
    return info.num_train_examples // global_batch_size


def num_eval_batches(info: DatasetInfo, global_batch_size: int) -> int:
    """Eval batches that every process yields, so that all of them cover their largest share.

    No process holds more than ceil(n / process_count) examples, and
    ceil(ceil(n / P) / (B / P)) == ceil(n / B).
    `global_batch_size` must be local_batch_size * process_count.
    """
    _check_batch(global_batch_size)
    return math.ceil(info.num_eval_examples / global_batch_size)
