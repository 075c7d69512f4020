"""TFDS + tf.data input pipelines for image classification.

Design goals, in order:

* Exact resume. The training stream is a pure function of (seed, step): epoch `e` is read
  with a shuffle seeded by (seed, e) and every random augmentation draws from stateless TF ops
  seeded by (seed, e, position of the example in the epoch). Restarting at step k rebuilds epoch
  k // steps_per_epoch and skips the examples before it *before* augmenting them, so a resumed
  run sees bit-identical batches without paying for the augmentation it skips.
* Multi-host safety. Each process reads a disjoint share of a split. Training takes the same
  number of steps on every process, and evaluation yields the same number of (masked) batches on
  every process, so collective ops in jitted steps never wait for a process that ran out of data.
* Offline first. Nothing downloads unless asked (`sources.open_source(..., download=True)`); a
  missing dataset is a one-line ValueError that says how to prepare it.
* Explicit arguments. Every function takes the opened dataset (`sources.Source`, opened once per
  run) and the few values it needs, never a training config.

Images come out as uint8 (N, H, W, C) and labels as int32 (N,); normalisation by `DatasetInfo.mean`
and `.std` is left to the device, which is cheaper than moving float32 images to it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TF's import, to silence its banner.

import tensorflow as tf  # noqa: E402

from sharesnet_jax.data import augment as ops  # noqa: E402
from sharesnet_jax.data import sources  # noqa: E402
from sharesnet_jax.data.info import (  # noqa: E402
    KNOWN_MEAN_STD,
    DatasetInfo,
    num_eval_batches,
    steps_per_epoch,
)

STATS_MAX_EXAMPLES = 2_000

# Distinct streams of randomness derived from one seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_FILE_ORDER_STREAM = 2


def load_info(
    source: sources.Source,
    *,
    train_split: str = 'train',
    eval_split: str | None = None,
    augment: str = 'auto',
    image_size: int | None = None,
) -> DatasetInfo:
    """What the pipelines will yield from `source` (see `sources.eval_split` for None, and
    `sources.resolve_augment` / `sources.output_hw` for 'auto' and None)."""
    image_feature, label_feature = sources.image_and_label_features(source)
    augment = sources.resolve_augment(augment, source, image_feature)
    height, width = sources.output_hw(image_size, image_feature, augment)
    channels = image_feature.shape[-1] or 3
    mean, std = _mean_std(source, train_split, (height, width), augment)
    return DatasetInfo(
        name=source.name,
        num_classes=int(label_feature.num_classes),
        image_shape=(height, width, int(channels)),
        num_train_examples=sources.split_size(source, train_split),
        num_eval_examples=sources.split_size(source, sources.eval_split(source, eval_split)),
        mean=mean,
        std=std,
        augment=augment,
        class_names=sources.class_names(label_feature),
        source=source,
    )


def train_batches(
    source: sources.Source,
    info: DatasetInfo,
    *,
    split: str = 'train',
    seed: int,
    local_batch_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 0,
    color_jitter: float = 0.0,
    pca_lighting: float = 0.0,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite stream of this process's augmented training batches, from step `start_step` on.

    Batches are {'image': uint8 (B, H, W, C), 'label': int32 (B,)} with B = local_batch_size.
    The stream is a pure function of (seed, step): from `start_step=k` it equals an
    uninterrupted stream's batches k, k+1, ... `shuffle_buffer` 0 shuffles each epoch fully.
    """
    _check_positive('local_batch_size', local_batch_size)
    _check_process(process_index, process_count)
    if start_step < 0:
        raise ValueError(f'start_step must be >= 0, got {start_step}.')
    num_steps = steps_per_epoch(info, local_batch_size * process_count)
    if num_steps == 0:
        raise ValueError(
            f'Global batch size {local_batch_size * process_count} exceeds the '
            f'{info.num_train_examples} training examples of {info.name!r}.'
        )
    epoch_reader = _EpochReader(
        source, info, split=split, seed=int(seed), shuffle_buffer=int(shuffle_buffer),
        color_jitter=color_jitter, pca_lighting=pca_lighting,
    )
    return _chain_epochs(
        epoch_reader, local_batch_size, num_steps, start_step, process_index, process_count
    )


def eval_batches(
    source: sources.Source,
    info: DatasetInfo,
    *,
    split: str | None = None,
    local_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this process's share of the eval split, in order, padded to full batches.

    Batches are {'image', 'label', 'mask'}; mask is float32 1 for real examples and 0 for padding.
    Every process yields exactly `num_eval_batches(info, local_batch_size * process_count)`
    batches, and across processes every example appears exactly once with mask 1.
    """
    _check_positive('local_batch_size', local_batch_size)
    _check_process(process_index, process_count)
    num_batches = num_eval_batches(info, local_batch_size * process_count)
    examples = sources.read(
        source, sources.eval_split(source, split), process_index=process_index,
        process_count=process_count,
    )
    examples = examples.map(
        lambda example: {
            'image': ops.eval_image(example['image'], augment=info.augment,
                                    image_shape=info.image_shape),
            'label': example['label'],
            'mask': tf.constant(1.0, tf.float32),
        },
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    padding = tf.data.Dataset.from_tensors({
        'image': tf.zeros(info.image_shape, tf.uint8),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0, tf.float32),
    }).repeat()
    batches = (
        examples.concatenate(padding)
        .take(num_batches * local_batch_size)
        .batch(local_batch_size, drop_remainder=True)
    )
    return _finish(batches).as_numpy_iterator()


# --------------------------------------------------------------------------------------------
# Training stream.


@dataclasses.dataclass(frozen=True)
class _EpochReader:
    """What every epoch of one training stream is read and augmented with."""

    source: sources.Source
    info: DatasetInfo
    split: str
    seed: int
    shuffle_buffer: int
    color_jitter: float
    pca_lighting: float


def _chain_epochs(
    reader: _EpochReader,
    local_batch_size: int,
    num_steps: int,
    start_step: int,
    process_index: int,
    process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Epochs are separate tf.data pipelines so that each one's seeds are plain Python ints."""
    epoch, step_in_epoch = divmod(start_step, num_steps)
    while True:
        batches = _train_epoch(
            reader, epoch=epoch,
            first_example=step_in_epoch * local_batch_size,
            num_examples=num_steps * local_batch_size,
            local_batch_size=local_batch_size,
            process_index=process_index, process_count=process_count,
        )
        yield from batches.as_numpy_iterator()
        epoch, step_in_epoch = epoch + 1, 0


def _train_epoch(
    reader: _EpochReader,
    *,
    epoch: int,
    first_example: int,
    num_examples: int,
    local_batch_size: int,
    process_index: int,
    process_count: int,
) -> tf.data.Dataset:
    """Batches of one epoch, starting at example `first_example` of its fixed shuffled order."""
    source, info, seed = reader.source, reader.info, reader.seed
    skip_decoding = info.augment == 'imagenet' and sources.is_jpeg(source)
    examples = sources.read(
        source, reader.split, process_index=process_index, process_count=process_count,
        file_order_seed=_derive_seed(seed, epoch, process_index, _FILE_ORDER_STREAM),
        skip_decoding=skip_decoding,
    )
    augment_key = tf.constant(_derive_key(seed, epoch, process_index, _AUGMENT_STREAM), tf.int64)

    def augment(index, example):
        example_key = tf.random.experimental.stateless_fold_in(augment_key, index)
        return {
            'image': ops.train_image(example['image'], example_key, augment=info.augment,
                                    image_shape=info.image_shape,
                                    color_jitter=reader.color_jitter,
                                    pca_lighting=reader.pca_lighting),
            'label': example['label'],
        }

    batches = (
        examples.shuffle(
            # 0: the buffer holds the whole split, so each epoch is a full permutation.
            reader.shuffle_buffer or info.num_train_examples,
            seed=_derive_seed(seed, epoch, process_index, _SHUFFLE_STREAM),
            reshuffle_each_iteration=False,
        )
        .take(num_examples)  # Equal steps on every process, whatever its share's size.
        .enumerate()
        .skip(first_example)  # Before the map: skipped examples are never augmented.
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(local_batch_size, drop_remainder=True)
    )
    return _finish(batches)


def _derive_key(*parts: int) -> tuple[int, int]:
    """Two well-mixed 32-bit words from integers; a stateless TF seed is such a pair."""
    state = np.random.SeedSequence([part % 2**64 for part in parts]).generate_state(2, np.uint32)
    return int(state[0]), int(state[1])


def _derive_seed(*parts: int) -> int:
    return _derive_key(*parts)[0]


def _finish(batches: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)

def _mean_std(
    source: sources.Source, train_split: str, hw: tuple[int, int], augment: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Published statistics when known, else measured on the first training images.

    Measured on the whole split's first images (not a process's share) so that every process
    normalises identically.
    """
    base_name = sources.base_name(source.tfds_name)
    if base_name in KNOWN_MEAN_STD:
        mean, std = KNOWN_MEAN_STD[base_name]
        return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)
    image_feature, _ = sources.image_and_label_features(source)
    shape = (*hw, int(image_feature.shape[-1] or 3))
    images = (
        sources.read(source, train_split, process_index=0, process_count=1)
        .take(STATS_MAX_EXAMPLES)
        .map(lambda example: ops.eval_image(example['image'], augment=augment, image_shape=shape),
             num_parallel_calls=tf.data.AUTOTUNE)
        .batch(500)
    )
    pixel_sum = np.zeros(shape[-1], np.float64)
    pixel_square_sum = np.zeros(shape[-1], np.float64)
    pixel_count = 0
    for batch in images.as_numpy_iterator():
        pixels = batch.reshape(-1, shape[-1]).astype(np.float64)
        pixel_sum += pixels.sum(axis=0)
        pixel_square_sum += np.square(pixels).sum(axis=0)
        pixel_count += len(pixels)
    mean = pixel_sum / max(pixel_count, 1)
    std = np.sqrt(np.maximum(pixel_square_sum / max(pixel_count, 1) - np.square(mean), 0.0))
    std = np.maximum(std, 1.0)  # A constant channel must not divide by zero on device.
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _check_positive(what: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f'{what} must be positive, got {value}.')


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f'Invalid process_index {process_index} of process_count {process_count}.')
