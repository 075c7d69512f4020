"""The embedded offline dataset: scikit-learn's handwritten digits as a local TFDS dataset.

There is no network on many of the machines this project runs on, and no TFDS dataset ships
inside a package. scikit-learn's wheel does ship 1,797 real 8x8 digit images, so the product uses
them as its offline default: upsampled to 32x32 and replicated to three channels they flow through
exactly the same CIFAR-style pipeline, model and trainer as CIFAR-10 does.

The images are written once as an ordinary TFDS dataset (`sharesnet_digits`) so the input
pipeline reads them like any other prepared dataset (splits, sub-splits per process, sizes from
`info.splits`), with no special code path. TensorFlow and scikit-learn are imported lazily so that
importing this module stays cheap.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

DATASET_NAME = 'sharesnet_digits'
DATASET_VERSION = '1.0.0'
IMAGE_SIZE = 32
NUM_CLASSES = 10
NUM_EXAMPLES = 1_797  # scikit-learn's load_digits()
# 30 test images per class: 300 test, 1,497 train; every class is equally represented in test.
TEST_EXAMPLES_PER_CLASS = 30
NUM_TRAIN_EXAMPLES = NUM_EXAMPLES - NUM_CLASSES * TEST_EXAMPLES_PER_CLASS
# The split must never change between runs or machines, or reported accuracies are not comparable.
SPLIT_SEED = 20160725
_SKLEARN_MAX_VALUE = 16.0


def ensure_digits_dataset(data_dir: str) -> str:
    """Writes the digits dataset into `data_dir` unless it is already there; returns `data_dir`.

    Several processes (pytest workers, one trainer per host) may call this at the same time on the
    same directory. Each writes into its own staging directory next to the final one and renames
    the finished version directory into place; a rename is atomic, so readers never see a half
    written dataset, and a process that loses the race simply uses the winner's copy (both are
    byte-for-byte the same data).
    """
    data_dir = os.fspath(data_dir)
    final_dir = _version_dir(data_dir)
    if _is_complete(final_dir):
        return data_dir
    os.makedirs(os.path.dirname(final_dir), exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=f'.{DATASET_NAME}-staging-', dir=data_dir)
    try:
        _write_dataset(staging_root)
        try:
            os.rename(_version_dir(staging_root), final_dir)
        except OSError:
            if not _is_complete(final_dir):  # Not a lost race: a real failure.
                raise
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return data_dir


def load_digit_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns {'train': (images, labels), 'test': (images, labels)} as they are stored.

    Exposed so tests and notebooks can see the exact arrays without going through TFDS.
    """
    from sklearn import datasets as sk_datasets  # Lazy: scikit-learn is only needed here.

    digits = sk_datasets.load_digits()
    images = _to_rgb_uint8(digits.images, IMAGE_SIZE)
    labels = digits.target.astype(np.int64)
    train_indices, test_indices = _stratified_split(labels)
    return {
        'train': (images[train_indices], labels[train_indices]),
        'test': (images[test_indices], labels[test_indices]),
    }


def _version_dir(data_dir: str) -> str:
    return os.path.join(data_dir, DATASET_NAME, DATASET_VERSION)


def _is_complete(version_dir: str) -> bool:
    # TFDS writes dataset_info.json last, and the directory only appears here by an atomic rename.
    return os.path.isfile(os.path.join(version_dir, 'dataset_info.json'))


def _stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Picks TEST_EXAMPLES_PER_CLASS test examples per class from one fixed permutation.

    Both index arrays keep the permutation's order, so the stored train split is already mixed
    rather than sorted the way scikit-learn happens to list the digits.
    """
    permutation = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    is_test = np.zeros(len(labels), dtype=bool)
    for label in range(NUM_CLASSES):
        of_this_class = permutation[labels[permutation] == label]
        is_test[of_this_class[:TEST_EXAMPLES_PER_CLASS]] = True
    train_indices = permutation[~is_test[permutation]]
    test_indices = permutation[is_test[permutation]]
    return train_indices, test_indices


def _to_rgb_uint8(images_0_to_16: np.ndarray, size: int) -> np.ndarray:
    """Upsamples (N, 8, 8) images with values 0..16 to (N, size, size, 3) uint8 0..255."""
    import tensorflow as tf  # Lazy: keeps `import sharesnet_jax.digits` free of TensorFlow.

    scaled = images_0_to_16.astype(np.float32)[..., None] * (255.0 / _SKLEARN_MAX_VALUE)
    resized = tf.image.resize(scaled, (size, size), method='bilinear').numpy()
    gray = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return np.repeat(gray, 3, axis=-1)


def _write_dataset(data_dir: str) -> None:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    features = tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
        'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
    })
    split_datasets = {
        split: tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
        for split, (images, labels) in load_digit_splits().items()
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name=DATASET_NAME,
        version=DATASET_VERSION,
        features=features,
        split_datasets=split_datasets,
        data_dir=data_dir,
        description=(
            "scikit-learn's load_digits() (1,797 8x8 handwritten digits), upsampled bilinearly "
            'to 32x32, scaled to 0..255 and replicated to 3 channels; fixed stratified split.'
        ),
        # Keep the order chosen above so the stored files are identical on every machine.
        disable_shuffling=True,
    )
