"""TFDS + tf.data input pipelines for image classification.

Design goals, in order:

* Exact resume. The training stream is a pure function of (config.seed, step): epoch `e` is read
  with a shuffle seeded by (seed, e) and every random augmentation draws from stateless TF ops
  seeded by (seed, e, position of the example in the epoch). Restarting at step k rebuilds epoch
  k // steps_per_epoch and skips the examples before it *before* augmenting them, so a resumed
  run sees bit-identical batches without paying for the augmentation it skips.
* Multi-host safety. Each process reads a disjoint share of a split. Training takes the same
  number of steps on every process, and evaluation yields the same number of (masked) batches on
  every process, so collective ops in jitted steps never wait for a process that ran out of data.
* Offline first. Nothing downloads unless `config.download` is true; a missing dataset becomes a
  one-line ValueError that says how to prepare it, instead of minutes of retries and a traceback.

Images come out as uint8 (N, H, W, C) and labels as int32 (N,); normalisation by `DatasetInfo.mean`
and `.std` is left to the device, which is cheaper than moving float32 images to it.
TensorFlow is imported only by the data modules, so models and the train step never depend on it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TF's import, to silence its banner.

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from sharesnet_jax import digits  # noqa: E402
from sharesnet_jax.dataset_info import (  # noqa: E402,F401 - re-exported
    DatasetInfo, num_eval_batches, steps_per_epoch,
)


def _hide_accelerators_from_tensorflow() -> None:
    """JAX owns the accelerators; TF would otherwise grab GPU memory for its own (unused) ops."""
    for device_type in ('GPU', 'TPU'):
        try:
            tf.config.set_visible_devices([], device_type)
        except (RuntimeError, ValueError):  # TF already initialised, or no such device type.
            pass


_hide_accelerators_from_tensorflow()

DIGITS = 'digits'
CIFAR_PADDING = 4
IMAGENET_EVAL_RESIZE_RATIO = 256 / 224
IMAGENET_CROP_AREA_RANGE = (0.08, 1.0)
IMAGENET_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
IMAGENET_CROP_MAX_ATTEMPTS = 10
DEFAULT_CIFAR_IMAGE_SIZE = 32
DEFAULT_IMAGENET_IMAGE_SIZE = 224
DEFAULT_SHUFFLE_BUFFER = 10_000
STATS_MAX_EXAMPLES = 2_000

# Published per-channel statistics (0..255 units) of the training sets.
_KNOWN_MEAN_STD = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Distinct streams of randomness derived from one config.seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_FILE_ORDER_STREAM = 2


@dataclasses.dataclass(frozen=True)
class _Source:
    """An opened TFDS builder plus the facts every pipeline needs to read it."""

    builder: Any  # tfds.core.DatasetBuilder
    name: str  # As given in config.dataset.
    tfds_name: str
    data_dir: str  # Where it was looked for (the TFDS default when config.data_dir is None).
    # False under tfds.testing.mock_data, where info.splits is empty and sub-splits are ignored.
    split_sizes_known: bool


# --------------------------------------------------------------------------------------------
# Public API.


def load_info(config) -> DatasetInfo:
    """Opens the dataset named by `config` and describes what the pipelines will yield.

    Raises a one-line ValueError, within seconds, when the dataset is not prepared offline.
    """
    source = _open_source(config)
    image_feature, label_feature = _image_and_label_features(source)
    augment = _resolve_augment(config, source, image_feature)
    height, width = _output_hw(config, image_feature, augment)
    channels = image_feature.shape[-1] or 3
    train_split = _train_split(config)
    mean, std = _mean_std(source, train_split, (height, width), augment)
    return DatasetInfo(
        name=source.name,
        num_classes=int(label_feature.num_classes),
        image_shape=(height, width, int(channels)),
        num_train_examples=_split_size(source, train_split),
        num_eval_examples=_split_size(source, _eval_split(config, source)),
        mean=mean,
        std=std,
        augment=augment,
        class_names=_class_names(label_feature),
    )


def train_batches(
    config,
    info: DatasetInfo,
    *,
    local_batch_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite stream of this process's augmented training batches, from step `start_step` on.

    Batches are {'image': uint8 (B, H, W, C), 'label': int32 (B,)} with B = local_batch_size.
    The stream from `start_step=k` equals an uninterrupted stream's batches k, k+1, ...
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
    source = _open_source(config)
    return _chain_epochs(
        source, config, info, local_batch_size, num_steps, start_step, process_index, process_count
    )


def eval_batches(
    config,
    info: DatasetInfo,
    *,
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
    source = _open_source(config)
    num_batches = num_eval_batches(info, local_batch_size * process_count)
    examples = _read(
        source, _eval_split(config, source), process_index=process_index,
        process_count=process_count,
    )
    hw = info.image_shape[:2]
    examples = examples.map(
        lambda example: {
            'image': _eval_image(example['image'], hw, info),
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


def _chain_epochs(
    source: _Source,
    config,
    info: DatasetInfo,
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
            source, config, info, epoch=epoch,
            first_example=step_in_epoch * local_batch_size,
            num_examples=num_steps * local_batch_size,
            local_batch_size=local_batch_size,
            process_index=process_index, process_count=process_count,
        )
        yield from batches.as_numpy_iterator()
        epoch, step_in_epoch = epoch + 1, 0


def _train_epoch(
    source: _Source,
    config,
    info: DatasetInfo,
    *,
    epoch: int,
    first_example: int,
    num_examples: int,
    local_batch_size: int,
    process_index: int,
    process_count: int,
) -> tf.data.Dataset:
    """Batches of one epoch, starting at example `first_example` of its fixed shuffled order."""
    seed = int(config.get('seed', 0))
    skip_decoding = info.augment == 'imagenet' and _is_jpeg(source)
    examples = _read(
        source, _train_split(config), process_index=process_index, process_count=process_count,
        file_order_seed=_derive_seed(seed, epoch, process_index, _FILE_ORDER_STREAM),
        skip_decoding=skip_decoding,
    )
    augment_key = tf.constant(_derive_key(seed, epoch, process_index, _AUGMENT_STREAM), tf.int64)
    hw = info.image_shape[:2]

    def augment(index, example):
        example_key = tf.random.experimental.stateless_fold_in(augment_key, index)
        return {
            'image': _train_image(example['image'], example_key, hw, info, _colour(config)),
            'label': example['label'],
        }

    batches = (
        examples.shuffle(
            int(config.get('shuffle_buffer', DEFAULT_SHUFFLE_BUFFER)),
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


# --------------------------------------------------------------------------------------------
# Image transformations (one example at a time, inside tf.data maps).


def _colour(config) -> tuple[float, float]:
    """(colour jitter strength, PCA lighting std) of ImageNet-style training augmentation."""
    return float(config.get('color_jitter', 0.0)), float(config.get('pca_lighting', 0.0))


def _train_image(image: tf.Tensor, key: tf.Tensor, hw: tuple[int, int], info: DatasetInfo,
                 colour: tuple[float, float] = (0.0, 0.0)):
    crop_key, flip_key, colour_key = tf.unstack(
        tf.random.experimental.stateless_split(key, num=3))
    if info.augment == 'imagenet':
        cropped = _random_resized_crop(image, crop_key, hw, info.image_shape[2])
        flipped = tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)
        if info.image_shape[2] == 3 and any(colour):
            flipped = _jitter_colour(flipped, colour_key, *colour)
        return tf.ensure_shape(flipped, info.image_shape)
    if info.augment == 'cifar':
        padded = tf.pad(
            _fit_to_size(image, hw),
            [[CIFAR_PADDING, CIFAR_PADDING], [CIFAR_PADDING, CIFAR_PADDING], [0, 0]],
            mode='REFLECT',
        )
        cropped = tf.image.stateless_random_crop(padded, info.image_shape, seed=crop_key)
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)
    return _eval_image(image, hw, info)


# fb.resnet.torch's PCA lighting (Krizhevsky et al. 2012): ImageNet RGB eigenvalues and
# eigenvectors (columns), for images in 0..1.
_LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
_LIGHTING_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                    (-0.5808, -0.0045, -0.8140),
                    (-0.5836, -0.6948, 0.4203))


def _jitter_colour(image: tf.Tensor, key: tf.Tensor, jitter: float, lighting: float) -> tf.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1-j, 1+j] (in that fixed
    order; fb.resnet.torch shuffles it), then PCA lighting noise of std `lighting`."""
    keys = tf.unstack(tf.random.experimental.stateless_split(key, num=4))
    x = tf.cast(image, tf.float32) / 255.0

    def factor(k):
        return tf.random.stateless_uniform([], k, 1.0 - jitter, 1.0 + jitter)

    if jitter:
        x = x * factor(keys[0])
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
        x = mean + (x - mean) * factor(keys[1])
        grey = tf.image.rgb_to_grayscale(x)
        x = grey + (x - grey) * factor(keys[2])
    if lighting:
        alpha = tf.random.stateless_normal([3], keys[3], stddev=lighting)
        shift = tf.linalg.matvec(tf.constant(_LIGHTING_EIGVEC), alpha * tf.constant(_LIGHTING_EIGVAL))
        x = x + shift
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)


def _eval_image(image: tf.Tensor, hw: tuple[int, int], info: DatasetInfo) -> tf.Tensor:
    if info.augment == 'imagenet':
        image = _resize_shorter_side_and_center_crop(image, hw, IMAGENET_EVAL_RESIZE_RATIO)
    else:
        image = _fit_to_size(image, hw)
    return tf.ensure_shape(image, info.image_shape)


def _random_resized_crop(
    image: tf.Tensor, key: tf.Tensor, hw: tuple[int, int], channels: int
) -> tf.Tensor:
    """Inception-style crop; on JPEG bytes only the crop window is ever decoded."""
    encoded = image.dtype == tf.string
    shape = tf.image.extract_jpeg_shape(image) if encoded else tf.shape(image)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=(1, 1, 4)),
        seed=key,
        min_object_covered=0.0,  # The area range alone decides; 0.1 would raise its floor to 10%.
        aspect_ratio_range=IMAGENET_CROP_ASPECT_RANGE,
        area_range=IMAGENET_CROP_AREA_RANGE,
        max_attempts=IMAGENET_CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    if encoded:
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        cropped = tf.image.decode_and_crop_jpeg(image, window, channels=channels)
    else:
        cropped = tf.slice(image, begin, size)
    return _resize_uint8(cropped, hw)


def _resize_shorter_side_and_center_crop(
    image: tf.Tensor, hw: tuple[int, int], resize_ratio: float
) -> tf.Tensor:
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    shorter_side_target = round(max(hw) * resize_ratio)
    scale = shorter_side_target / tf.minimum(height, width)
    resized_h = tf.maximum(hw[0], tf.cast(tf.round(height * scale), tf.int32))
    resized_w = tf.maximum(hw[1], tf.cast(tf.round(width * scale), tf.int32))
    resized = _resize_uint8(image, tf.stack([resized_h, resized_w]))
    top, left = (resized_h - hw[0]) // 2, (resized_w - hw[1]) // 2
    return tf.image.crop_to_bounding_box(resized, top, left, hw[0], hw[1])


def _fit_to_size(image: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
    """Fixed-size images are kept (or resized); variable-size ones are center-cropped."""
    static_hw = tuple(image.shape[:2])
    if static_hw == tuple(hw):
        return image
    if None not in static_hw:
        return _resize_uint8(image, hw)
    return _resize_shorter_side_and_center_crop(image, hw, resize_ratio=1.0)


def _resize_uint8(image: tf.Tensor, hw) -> tf.Tensor:
    resized = tf.image.resize(image, hw, method='bilinear')
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


# --------------------------------------------------------------------------------------------
# Reading TFDS.


def _open_source(config) -> _Source:
    name = str(config.get('dataset', DIGITS))
    data_dir = config.get('data_dir', None) or _default_data_dir()
    tfds_name = name
    if name == DIGITS:
        digits.ensure_digits_dataset(data_dir)
        tfds_name = digits.DATASET_NAME
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except (ValueError, AssertionError, OSError) as error:  # DatasetNotFoundError is a ValueError.
        raise ValueError(
            f'Unknown dataset {name!r} (data_dir {data_dir!r}): {_first_line(error)}'
        ) from None
    source = _Source(
        builder=builder, name=name, tfds_name=tfds_name, data_dir=data_dir,
        split_sizes_known=bool(builder.info.splits),
    )
    _prepare_or_explain(source, config)
    return source


def _prepare_or_explain(source: _Source, config) -> None:
    """Downloads when asked to; otherwise fails fast (0.2 s, not 200 s of retries) when absent."""
    if source.builder.is_prepared():
        return
    if config.get('download', False):
        download_config = tfds.download.DownloadConfig(manual_dir=config.get('manual_dir', None))
        try:
            source.builder.download_and_prepare(download_config=download_config)
        except Exception as error:  # noqa: BLE001 - any failure here means "could not prepare".
            raise ValueError(
                f'Could not download/prepare dataset {source.name!r} into data_dir '
                f'{source.data_dir!r}: {_first_line(error)}{_manual_note(source)}'
            ) from None
        return
    # Not prepared: either really absent, or tfds.testing.mock_data, whose as_dataset works.
    _as_dataset(source, _train_split(config))


def _as_dataset(source: _Source, split, **kwargs) -> tf.data.Dataset:
    try:
        return source.builder.as_dataset(split=split, **kwargs)
    except AssertionError:  # TFDS's way of saying "no prepared data here".
        raise ValueError(_absent_message(source)) from None
    except (ValueError, KeyError) as error:  # An unknown split, typically.
        raise ValueError(
            f'Cannot read split {split!r} of dataset {source.name!r} (data_dir '
            f'{source.data_dir!r}): {_first_line(error)}'
        ) from None


def _read(
    source: _Source,
    split: str,
    *,
    process_index: int,
    process_count: int,
    file_order_seed: int | None = None,
    skip_decoding: bool = False,
) -> tf.data.Dataset:
    """This process's share of `split` as {'image', 'label' (int32)}, in a deterministic order.

    `file_order_seed` shuffles the order of the files (training); None reads them in order.
    """
    use_even_splits = source.split_sizes_known and process_count > 1
    if use_even_splits:
        split = tfds.even_splits(split, process_count)[process_index]
    examples = _as_dataset(
        source,
        split,
        # An ordered dataset (disable_shuffling) refuses shuffled files; its order is the point.
        shuffle_files=file_order_seed is not None and not source.builder.info.disable_shuffling,
        decoders={'image': tfds.decode.SkipDecoding()} if skip_decoding else None,
        read_config=tfds.ReadConfig(shuffle_seed=file_order_seed, try_autocache=False),
    )
    if process_count > 1 and not use_even_splits:  # mock_data ignores sub-splits: shard instead.
        examples = examples.shard(process_count, process_index)
    return examples.map(
        lambda example: {'image': example['image'], 'label': tf.cast(example['label'], tf.int32)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _finish(batches: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def _split_size(source: _Source, split: str) -> int:
    if source.split_sizes_known:
        try:
            return int(source.builder.info.splits[split].num_examples)
        except (KeyError, ValueError) as error:
            raise ValueError(
                f'Dataset {source.name!r} has no split {split!r}: {_first_line(error)}'
            ) from None
    examples = _as_dataset(source, split)  # mock_data: count what it yields.
    cardinality = int(examples.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(examples.reduce(0, lambda count, _: count + 1))


def _mean_std(
    source: _Source, train_split: str, hw: tuple[int, int], augment: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Published statistics when known, else measured on the first training images.

    Measured on the whole split's first images (not a process's share) so that every process
    normalises identically.
    """
    base_name = _base_name(source.tfds_name)
    if base_name in _KNOWN_MEAN_STD:
        mean, std = _KNOWN_MEAN_STD[base_name]
        return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)
    image_feature, _ = _image_and_label_features(source)
    shape = (*hw, int(image_feature.shape[-1] or 3))
    # Only the fields _eval_image reads; the statistics are of what the model will be fed.
    eval_view = DatasetInfo('', 0, shape, 0, 0, (), (), augment, ())
    images = (
        _read(source, train_split, process_index=0, process_count=1)
        .take(STATS_MAX_EXAMPLES)
        .map(lambda example: _eval_image(example['image'], hw, eval_view),
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


# --------------------------------------------------------------------------------------------
# Small helpers.


def _image_and_label_features(source: _Source):
    features = source.builder.info.features
    if 'image' not in features or 'label' not in features:
        raise ValueError(
            f'Dataset {source.name!r} is not an image classification dataset with "image" and '
            f'"label" features (it has {sorted(features.keys())}).'
        )
    image_feature, label_feature = features['image'], features['label']
    if not hasattr(label_feature, 'num_classes'):
        raise ValueError(f'The "label" feature of {source.name!r} is not a ClassLabel.')
    if image_feature.np_dtype != np.uint8:
        raise ValueError(f'The images of {source.name!r} are {image_feature.np_dtype}, not uint8.')
    return image_feature, label_feature


def _resolve_augment(config, source: _Source, image_feature) -> str:
    """'auto': ImageNet-style for ImageNet and for any dataset whose images vary in size."""
    augment = str(config.get('augment', 'auto'))
    if augment not in ('auto', 'cifar', 'imagenet', 'none'):
        raise ValueError(f"augment must be 'auto', 'cifar', 'imagenet' or 'none', got {augment!r}.")
    if augment != 'auto':
        return augment
    variable_size = None in tuple(image_feature.shape[:2])
    is_imagenet = _base_name(source.tfds_name).startswith('imagenet2012')
    return 'imagenet' if is_imagenet or variable_size else 'cifar'


def _output_hw(config, image_feature, augment: str) -> tuple[int, int]:
    image_size = config.get('image_size', None)
    if image_size:
        return int(image_size), int(image_size)
    if augment == 'imagenet':
        return DEFAULT_IMAGENET_IMAGE_SIZE, DEFAULT_IMAGENET_IMAGE_SIZE
    static_hw = tuple(image_feature.shape[:2])
    if None not in static_hw:
        return int(static_hw[0]), int(static_hw[1])
    return DEFAULT_CIFAR_IMAGE_SIZE, DEFAULT_CIFAR_IMAGE_SIZE


def _train_split(config) -> str:
    return str(config.get('train_split', None) or 'train')


def _eval_split(config, source: _Source) -> str:
    """config.eval_split, else 'test' when the dataset has one, else 'validation'."""
    eval_split = config.get('eval_split', None)
    if eval_split:
        return str(eval_split)
    split_names = set(source.builder.info.splits.keys())
    if split_names:
        return 'test' if 'test' in split_names else 'validation'
    # mock_data knows no split names; ImageNet's held-out split is its validation set.
    return 'validation' if _base_name(source.tfds_name).startswith('imagenet') else 'test'


def _class_names(label_feature) -> tuple[str, ...]:
    names = getattr(label_feature, 'names', None)
    if names:
        return tuple(str(name) for name in names)
    return tuple(str(index) for index in range(label_feature.num_classes))


def _is_jpeg(source: _Source) -> bool:
    image_feature = source.builder.info.features['image']
    return getattr(image_feature, 'encoding_format', None) == 'jpeg'


def _base_name(tfds_name: str) -> str:
    return tfds_name.split(':')[0].split('/')[0]


def _default_data_dir() -> str:
    return os.environ.get('TFDS_DATA_DIR') or os.path.join(
        os.path.expanduser('~'), 'tensorflow_datasets'
    )


def _absent_message(source: _Source) -> str:
    prepare = (
        f'python -c "import tensorflow_datasets as tfds; tfds.builder({source.tfds_name!r}, '
        f'data_dir={source.data_dir!r}).download_and_prepare()"'
    )
    return (
        f'Dataset {source.name!r} is not prepared in data_dir {source.data_dir!r} and downloading '
        f'is off (config.download=False). Prepare it once with: {prepare}, or rerun with '
        f'--config.download=True.{_manual_note(source)}'
    )


def _manual_note(source: _Source) -> str:
    if not _base_name(source.tfds_name).startswith('imagenet2012'):
        return ''
    manual_dir = os.path.join(source.data_dir, 'downloads', 'manual')
    return (
        f' ImageNet cannot be downloaded automatically: first place ILSVRC2012_img_train.tar and '
        f'ILSVRC2012_img_val.tar in the manual_dir ({manual_dir!r} by default, or '
        f'--config.manual_dir).'
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_positive(what: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f'{what} must be positive, got {value}.')


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f'Invalid process_index {process_index} of process_count {process_count}.')
