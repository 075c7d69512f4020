"""Opening TFDS datasets and reading their splits, with every failure worded for the user.

Nothing downloads unless the caller asks (`download=True`); a dataset that is not prepared is a
one-line ValueError within a fraction of a second that says how to prepare it, instead of
minutes of download retries and a traceback. Each process reads a disjoint share of a split.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TF's import, to silence its banner.

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from sharesnet_jax.data import digits, hide_accelerators_from_tensorflow  # noqa: E402
from sharesnet_jax.data.info import AUGMENT_STYLES  # noqa: E402
from sharesnet_jax.errors import first_line  # noqa: E402

hide_accelerators_from_tensorflow()

DIGITS = 'digits'
DEFAULT_CIFAR_IMAGE_SIZE = 32
DEFAULT_IMAGENET_IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class Source:
    """An opened, prepared TFDS builder plus the names the error messages need.

    Open it once per run (`open_source`) and hand it to every pipeline, as flax's imagenet
    example hands its `dataset_builder` to `create_split`.
    """

    builder: Any  # tfds.core.DatasetBuilder
    name: str  # As the user gave it ('digits' for the embedded one).
    tfds_name: str
    data_dir: str  # Where it was looked for (the TFDS default when none was given).


def open_source(
    dataset: str, data_dir: str | None = None, *, download: bool = False,
    manual_dir: str | None = None,
) -> Source:
    """Opens `dataset` under `data_dir`, preparing it first only when `download` is true.

    Raises a one-line ValueError, within a second, when it is unknown or not prepared.
    """
    name = str(dataset)
    data_dir = data_dir or _default_data_dir()
    tfds_name = name
    if name == DIGITS:
        try:
            digits.ensure_digits_dataset(data_dir)
        except OSError as error:
            raise ValueError(
                f'data_dir {data_dir!r} cannot take the digits dataset ({error.strerror or error}'
                f'{": " + str(error.filename) if error.filename else ""}): give a directory '
                'this process can create and write'
            ) from None
        tfds_name = digits.DATASET_NAME
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - see below
        folder = os.path.join(data_dir, base_name(tfds_name))
        # A prepared folder whose dataset_info.json / features.json is not the JSON TFDS wrote:
        # TFDS raises protobuf's ParseError or json's JSONDecodeError.
        if type(error).__name__ in ('ParseError', 'JSONDecodeError', 'DecodeError'):
            raise ValueError(
                f'the metadata of dataset {name!r} under {folder} cannot be read '
                f'({type(error).__name__}: {first_line(error)}): it is corrupt; delete that '
                'folder and prepare the dataset again'
            ) from None
        if not isinstance(error, (ValueError, AssertionError, OSError)):
            raise  # DatasetNotFoundError is a ValueError; anything else is ours to see
        raise ValueError(
            f'Unknown dataset {name!r} (data_dir {data_dir!r}): {first_line(error)}'
        ) from None
    source = Source(builder=builder, name=name, tfds_name=tfds_name, data_dir=data_dir)
    _prepare_or_explain(source, download, manual_dir)
    return source


def _prepare_or_explain(source: Source, download: bool, manual_dir: str | None) -> None:
    """Downloads when asked to; otherwise fails fast (0.2 s, not 200 s of retries) when absent."""
    if source.builder.is_prepared():
        return
    if not download:
        raise ValueError(_absent_message(source)) from None
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        source.builder.download_and_prepare(download_config=download_config)
    except Exception as error:  # noqa: BLE001 - any failure here means "could not prepare".
        raise ValueError(
            f'Could not download/prepare dataset {source.name!r} into data_dir '
            f'{source.data_dir!r}: {first_line(error)}{_manual_note(source)}'
        ) from None


def as_dataset(source: Source, split, **kwargs) -> tf.data.Dataset:
    try:
        return source.builder.as_dataset(split=split, **kwargs)
    except (ValueError, KeyError) as error:  # An unknown split, typically.
        raise ValueError(
            f'Cannot read split {split!r} of dataset {source.name!r} (data_dir '
            f'{source.data_dir!r}): {first_line(error)}'
        ) from None


def read(
    source: Source,
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
    if process_count > 1:
        split = tfds.even_splits(split, process_count)[process_index]
    examples = as_dataset(
        source,
        split,
        # An ordered dataset (disable_shuffling) refuses shuffled files; its order is the point.
        shuffle_files=file_order_seed is not None and not source.builder.info.disable_shuffling,
        decoders={'image': tfds.decode.SkipDecoding()} if skip_decoding else None,
        read_config=tfds.ReadConfig(shuffle_seed=file_order_seed, try_autocache=False),
    )
    return examples.map(
        lambda example: {'image': example['image'], 'label': tf.cast(example['label'], tf.int32)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )

def split_size(source: Source, split: str) -> int:
    """The examples `split` selects, with the files of the split it reads checked first."""
    try:
        size = int(source.builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as error:
        raise ValueError(
            f'Dataset {source.name!r} has no split {split!r}: {first_line(error)}'
        ) from None
    check_split_files(source, split)
    return size

# A TFRecord holds each example behind 16 bytes of framing: its length and two checksums.
_TFRECORD_FRAMING_BYTES = 16


def check_split_files(source: Source, split: str) -> None:
    """The files of `split` (of the whole split a sub-split such as 'test[:50%]' reads) are
    there, readable regular files, and as long as TFDS recorded when it wrote them: a missing or
    truncated evaluation file is found before the first step, not after training."""
    whole = split.split('[')[0]
    try:
        info = source.builder.info.splits[whole]
        paths = [os.fspath(path) for path in info.filepaths]
    except (KeyError, ValueError):
        return  # the name was resolved by TFDS above; no files of its own to check
    found = 0
    for path in paths:
        try:
            status = os.stat(path)
            problem = None if stat.S_ISREG(status.st_mode) else 'it is not a regular file'
            if problem is None and not os.access(path, os.R_OK):
                problem = 'permission denied'
        except OSError as error:
            problem = error.strerror or str(error)
        if problem:
            raise ValueError(
                f'the files of split {whole!r} of dataset {source.name!r} are not all readable: '
                f'{path} ({problem}); delete its prepared folder and prepare it again'
            )
        found += status.st_size
    expected = int(info.num_bytes) + _TFRECORD_FRAMING_BYTES * int(info.num_examples)
    is_tfrecord = str(getattr(source.builder.info, 'file_format', '')).lower().endswith('tfrecord')
    if is_tfrecord and int(info.num_bytes) > 0 and found < expected:
        raise ValueError(
            f'the files of split {whole!r} of dataset {source.name!r} hold {found} bytes, fewer '
            f'than the {expected} TFDS wrote (under {os.path.dirname(paths[0])}): they are '
            'truncated; delete its prepared folder and prepare it again'
        )


def image_and_label_features(source: Source):
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


def resolve_augment(augment: str, source: Source, image_feature) -> str:
    """'auto': ImageNet-style for ImageNet and for any dataset whose images vary in size."""
    if augment in AUGMENT_STYLES:
        return augment
    variable_size = None in tuple(image_feature.shape[:2])
    is_imagenet = base_name(source.tfds_name).startswith('imagenet2012')
    return 'imagenet' if is_imagenet or variable_size else 'cifar'


def output_hw(image_size: int | None, image_feature, augment: str) -> tuple[int, int]:
    """`image_size` square when given, else the dataset's (or its style's) size."""
    if image_size:
        return int(image_size), int(image_size)
    if augment == 'imagenet':
        return DEFAULT_IMAGENET_IMAGE_SIZE, DEFAULT_IMAGENET_IMAGE_SIZE
    static_hw = tuple(image_feature.shape[:2])
    if None not in static_hw:
        return int(static_hw[0]), int(static_hw[1])
    return DEFAULT_CIFAR_IMAGE_SIZE, DEFAULT_CIFAR_IMAGE_SIZE


def eval_split(source: Source, requested: str | None) -> str:
    """`requested`, else 'test' when the dataset has one, else 'validation' (ImageNet's)."""
    if requested:
        return str(requested)
    return 'test' if 'test' in source.builder.info.splits else 'validation'


def class_names(label_feature) -> tuple[str, ...]:
    names = getattr(label_feature, 'names', None)
    if names:
        return tuple(str(name) for name in names)
    return tuple(str(index) for index in range(label_feature.num_classes))


def is_jpeg(source: Source) -> bool:
    image_feature = source.builder.info.features['image']
    return getattr(image_feature, 'encoding_format', None) == 'jpeg'


def base_name(tfds_name: str) -> str:
    return tfds_name.split(':')[0].split('/')[0]


def _default_data_dir() -> str:
    return os.environ.get('TFDS_DATA_DIR') or os.path.join(
        os.path.expanduser('~'), 'tensorflow_datasets'
    )


def _absent_message(source: Source) -> str:
    prepare = (
        f'python -c "import tensorflow_datasets as tfds; tfds.builder({source.tfds_name!r}, '
        f'data_dir={source.data_dir!r}).download_and_prepare()"'
    )
    return (
        f'Dataset {source.name!r} is not prepared in data_dir {source.data_dir!r} and downloading '
        f'is off (download=False). Prepare it once with: {prepare}, or rerun with '
        f'--config.download=True.{_manual_note(source)}'
    )


def _manual_note(source: Source) -> str:
    if not base_name(source.tfds_name).startswith('imagenet2012'):
        return ''
    manual_dir = os.path.join(source.data_dir, 'downloads', 'manual')
    return (
        f' ImageNet cannot be downloaded automatically: first place ILSVRC2012_img_train.tar and '
        f'ILSVRC2012_img_val.tar in the manual_dir ({manual_dir!r} by default, or '
        f'--config.manual_dir).'
    )


