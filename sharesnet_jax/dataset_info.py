"""What the trainer needs to know about a dataset, in a module free of TensorFlow so the
synthetic (benchmark) path can describe its data without importing it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a dataset, independent of TF."""

    name: str  # As given in config.dataset ('digits' for the embedded one).
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the images the pipeline yields.
    num_train_examples: int  # Whole train split, all processes.
    num_eval_examples: int  # Whole eval split, all processes.
    mean: tuple[float, ...]  # Per-channel, 0..255 units, for on-device normalisation.
    std: tuple[float, ...]
    augment: str  # 'cifar', 'imagenet' or 'none' (training augmentation actually used).
    class_names: tuple[str, ...]
