"""Tests of the TFDS input pipelines and the embedded digits dataset; all offline and fast."""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sharesnet_jax.data import digits, sources
from sharesnet_jax.data import pipeline as input_pipeline
from tests.helpers import write_tiny_tfds_dataset

NUM_DIGITS_TRAIN = 1497
NUM_DIGITS_TEST = 300
SHUFFLE_BUFFER = 2048  # A partial shuffle is enough where the order is not the point.


def open_digits(data_dir: str, **load_options):
    """The digits source and its description under `load_options` (see pipeline.load_info)."""
    source = sources.open_source('digits', data_dir)
    return source, input_pipeline.load_info(source, **load_options)


def train_stream(source, info, *, seed: int = 0, shuffle_buffer: int = SHUFFLE_BUFFER, **options):
    return input_pipeline.train_batches(source, info, seed=seed, shuffle_buffer=shuffle_buffer,
                                        **options)


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory) -> str:
    return digits.ensure_digits_dataset(str(tmp_path_factory.mktemp('tfds')))


def example_hashes(batch: dict[str, np.ndarray], mask=None) -> list[str]:
    """Identifies examples by content, so shares can be compared across processes."""
    keep = np.ones(len(batch['label']), bool) if mask is None else mask > 0
    return [
        hashlib.sha1(image.tobytes() + bytes([int(label)])).hexdigest()
        for image, label in zip(batch['image'][keep], batch['label'][keep])
    ]


def digits_split_hashes(split: str) -> collections.Counter:
    images, labels = digits.load_digit_splits()[split]
    return collections.Counter(example_hashes({'image': images, 'label': labels}))


def take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(iterator, count))


def assert_batches_equal(expected, actual) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


# ---------------------------------------------------------------------------------------------
# The embedded digits dataset.


def test_digits_dataset_is_written_and_reads_back(digits_dir):
    builder = tfds.builder(digits.DATASET_NAME, data_dir=digits_dir)
    assert builder.info.splits['train'].num_examples == NUM_DIGITS_TRAIN
    assert builder.info.splits['test'].num_examples == NUM_DIGITS_TEST
    for split, size in (('train', NUM_DIGITS_TRAIN), ('test', NUM_DIGITS_TEST)):
        batch = next(iter(tfds.as_numpy(builder.as_dataset(split=split, batch_size=size))))
        assert batch['image'].shape == (size, 32, 32, 3)
        assert batch['image'].dtype == np.uint8
        assert batch['image'].max() == 255
        assert set(batch['label'].tolist()) == set(range(10))
    test_labels = next(iter(tfds.as_numpy(builder.as_dataset(split='test', batch_size=300))))
    assert np.bincount(test_labels['label']).tolist() == [30] * 10  # Stratified.
    assert not [name for name in os.listdir(digits_dir) if 'staging' in name]


def test_second_ensure_reuses_the_dataset(digits_dir, monkeypatch):
    def fail(_):
        raise AssertionError('the dataset was written again')

    monkeypatch.setattr(digits, '_write_dataset', fail)
    assert digits.ensure_digits_dataset(digits_dir) == digits_dir


def test_ensure_that_loses_the_rename_race_uses_the_winner(digits_dir, monkeypatch):
    # Pretend the dataset is absent at the first check, as for a process that started writing
    # just before another one finished: its rename then fails and it must keep the winner's copy.
    real_is_complete = digits._is_complete
    answers = iter([False])
    monkeypatch.setattr(
        digits, '_is_complete', lambda path: next(answers, True) and real_is_complete(path)
    )
    assert digits.ensure_digits_dataset(digits_dir) == digits_dir
    assert not [name for name in os.listdir(digits_dir) if 'staging' in name]
    builder = tfds.builder(digits.DATASET_NAME, data_dir=digits_dir)
    assert builder.info.splits['train'].num_examples == NUM_DIGITS_TRAIN


def test_load_info_digits(digits_dir):
    _, info = open_digits(digits_dir)
    assert info.name == 'digits'
    assert info.num_classes == 10
    assert info.image_shape == (32, 32, 3)
    assert (info.num_train_examples, info.num_eval_examples) == (NUM_DIGITS_TRAIN, NUM_DIGITS_TEST)
    assert info.augment == 'cifar'
    assert info.class_names == tuple(str(i) for i in range(10))
    assert len(info.mean) == len(info.std) == 3
    assert all(20 < m < 200 for m in info.mean) and all(20 < s < 150 for s in info.std)


def test_defaults_with_only_dataset_data_dir_and_seed_work(digits_dir):
    source, info = open_digits(digits_dir)
    batch = next(input_pipeline.train_batches(source, info, seed=0, local_batch_size=8))
    assert batch['image'].shape == (8, 32, 32, 3)


# ---------------------------------------------------------------------------------------------
# Shapes and dtypes, including tiny real CIFAR-10 and ImageNet datasets.


def check_train_and_eval(source, info, local_batch_size: int) -> None:
    height, width, channels = info.image_shape
    train = take(train_stream(source, info, local_batch_size=local_batch_size), 3)
    for batch in train:
        assert set(batch) == {'image', 'label'}
        assert batch['image'].shape == (local_batch_size, height, width, channels)
        assert batch['image'].dtype == np.uint8
        assert batch['label'].shape == (local_batch_size,)
        assert batch['label'].dtype == np.int32
        assert batch['label'].min() >= 0 and batch['label'].max() < info.num_classes
    evaluation = list(input_pipeline.eval_batches(source, info, local_batch_size=local_batch_size))
    assert len(evaluation) == input_pipeline.num_eval_batches(info, local_batch_size)
    for batch in evaluation:
        assert set(batch) == {'image', 'label', 'mask'}
        assert batch['image'].shape == (local_batch_size, height, width, channels)
        assert batch['image'].dtype == np.uint8
        assert batch['label'].dtype == np.int32
        assert batch['mask'].dtype == np.float32
    assert sum(batch['mask'].sum() for batch in evaluation) == info.num_eval_examples


def test_tiny_cifar10(tmp_path):
    source = sources.open_source('cifar10', write_tiny_tfds_dataset(
        tmp_path, 'cifar10', {'train': 10, 'test': 6}))
    info = input_pipeline.load_info(source)
    assert info.image_shape == (32, 32, 3)
    assert info.augment == 'cifar'
    assert (info.num_train_examples, info.num_eval_examples) == (10, 6)
    assert info.mean[0] == pytest.approx(125.3, abs=0.1)
    assert len(info.class_names) == 10
    check_train_and_eval(source, info, local_batch_size=4)


def test_tiny_imagenet_handles_images_of_many_sizes(tmp_path):
    source = sources.open_source('imagenet2012', write_tiny_tfds_dataset(
        tmp_path, 'imagenet2012', {'train': 10, 'validation': 6}))
    assert sources.is_jpeg(source)
    info = input_pipeline.load_info(source, image_size=64)
    assert info.image_shape == (64, 64, 3)
    assert info.augment == 'imagenet'
    assert info.num_classes == 1000
    assert info.num_eval_examples == 6  # No 'test' split: ImageNet's 'validation' evaluates.
    assert info.mean[0] == pytest.approx(123.675)
    check_train_and_eval(source, info, local_batch_size=4)


def test_imagenet_style_on_decoded_images(digits_dir):
    # Digits are decoded arrays, not JPEG bytes: the random-resized crop's other branch.
    source, info = open_digits(digits_dir, augment='imagenet', image_size=24)
    assert info.image_shape == (24, 24, 3)
    check_train_and_eval(source, info, local_batch_size=64)


def test_colour_jitter_and_lighting_are_deterministic_and_change_images(digits_dir):
    source, info = open_digits(digits_dir, augment='imagenet', image_size=24)
    colour = dict(color_jitter=0.4, pca_lighting=0.1)
    first = take(train_stream(source, info, local_batch_size=32, **colour), 2)
    again = take(train_stream(source, info, local_batch_size=32, **colour), 2)
    assert_batches_equal(first, again)
    base = take(train_stream(source, info, local_batch_size=32), 2)
    assert first[0]['image'].dtype == np.uint8
    assert np.mean(first[0]['image'] != base[0]['image']) > 0.1
    np.testing.assert_array_equal(first[0]['label'], base[0]['label'])


def test_augment_none_yields_the_stored_images(digits_dir):
    source, info = open_digits(digits_dir, augment='none')
    batch = next(train_stream(source, info, local_batch_size=32))
    assert set(example_hashes(batch)) <= set(digits_split_hashes('train'))


# ---------------------------------------------------------------------------------------------
# Determinism and exact resume.


@pytest.fixture(scope='module')
def digits_stream(digits_dir):
    """The first 9 batches of 256 (5 steps per epoch): they cross an epoch boundary."""
    source, info = open_digits(digits_dir)
    batches = take(train_stream(source, info, seed=7, local_batch_size=256), 9)
    return source, info, batches


@pytest.mark.parametrize('start_step', [3, 5, 7])
def test_resume_yields_the_same_batches(digits_stream, start_step):
    source, info, batches = digits_stream
    assert input_pipeline.steps_per_epoch(info, 256) == 5
    resumed = train_stream(source, info, seed=7, local_batch_size=256, start_step=start_step)
    assert_batches_equal(batches[start_step:], take(resumed, len(batches) - start_step))


def test_same_seed_same_stream_other_seed_other_stream(digits_stream):
    source, info, batches = digits_stream
    again = take(train_stream(source, info, seed=7, local_batch_size=256), 2)
    assert_batches_equal(batches[:2], again)
    other = next(train_stream(source, info, seed=8, local_batch_size=256))
    assert not np.array_equal(other['label'], batches[0]['label'])
    assert not np.array_equal(other['image'], batches[0]['image'])


def test_epochs_are_shuffled_and_augmented_differently(digits_stream):
    _, _, batches = digits_stream
    assert not np.array_equal(batches[0]['label'], batches[5]['label'])


def _epoch_positions(source, info, start_step=0, steps=10):
    """Positions, in the stored order, of the unaugmented examples of `steps` batches of 128."""
    images, labels = digits.load_digit_splits()['train']
    position = {h: i for i, h in enumerate(example_hashes({'image': images, 'label': labels}))}
    batches = take(train_stream(source, info, shuffle_buffer=0, local_batch_size=128,
                                start_step=start_step), steps)
    return [[position[h] for h in example_hashes(batch)] for batch in batches]


def test_each_epoch_is_a_full_permutation_of_the_training_set(digits_dir):
    """shuffle_buffer=0 (the schema's default): every epoch draws its examples from the whole
    split (the Torch code's randperm), never twice, in a new order each epoch, the same after a
    resume. 1,497 examples, 11 steps of 128 per epoch (the last 89 dropped, as 'skip-last')."""
    source, info = open_digits(digits_dir, augment='none')
    assert input_pipeline.steps_per_epoch(info, 128) == 11
    batches = _epoch_positions(source, info, steps=22)
    epochs = [sum(batches[:11], []), sum(batches[11:], [])]
    for epoch in epochs:
        assert len(set(epoch)) == len(epoch) == 11 * 128
    assert epochs[0] != epochs[1] and set(epochs[0]) != set(epochs[1])
    # A buffer would keep the first batch near the start of the stored order; a permutation
    # draws it from everywhere.
    assert max(batches[0]) > 1300 and max(batches[11]) > 1300
    assert _epoch_positions(source, info, start_step=13, steps=3) == batches[13:16]


# ---------------------------------------------------------------------------------------------
# Several processes.


def test_process_train_shares_are_disjoint(digits_dir):
    source, info = open_digits(digits_dir, augment='none')  # Unaugmented: hashes identify.
    steps = input_pipeline.steps_per_epoch(info, 2 * 128)
    shares = []
    for process_index in range(2):
        stream = train_stream(
            source, info, local_batch_size=128, process_index=process_index, process_count=2
        )
        shares.append([h for batch in take(stream, steps) for h in example_hashes(batch)])
    first, second = (set(share) for share in shares)
    assert len(first) == len(second) == steps * 128
    assert not first & second
    assert first | second <= set(digits_split_hashes('train'))


@pytest.mark.parametrize('process_count', [2, 3])
def test_eval_covers_every_example_once_with_equal_batch_counts(digits_dir, process_count):
    source, info = open_digits(digits_dir)
    local_batch_size = 32
    assert (NUM_DIGITS_TEST % (local_batch_size * process_count)) != 0
    seen, batch_counts = collections.Counter(), []
    for process_index in range(process_count):
        batches = list(input_pipeline.eval_batches(
            source, info, local_batch_size=local_batch_size,
            process_index=process_index, process_count=process_count,
        ))
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch['image'].shape[0] == local_batch_size
            seen.update(example_hashes(batch, mask=batch['mask']))
    expected_batches = input_pipeline.num_eval_batches(info, local_batch_size * process_count)
    assert batch_counts == [expected_batches] * process_count
    assert seen == digits_split_hashes('test')


# ---------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet2012'])
def test_absent_dataset_is_a_quick_one_line_value_error(tmp_path, dataset):
    started = time.monotonic()
    with pytest.raises(ValueError) as raised:
        sources.open_source(dataset, str(tmp_path))
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert '\n' not in message
    assert dataset in message and str(tmp_path) in message
    assert 'download_and_prepare' in message and 'download=True' in message
    assert raised.value.__suppress_context__  # No chained TF/TFDS traceback.
    if dataset == 'imagenet2012':
        assert 'manual_dir' in message


def test_unknown_dataset_is_a_one_line_value_error(tmp_path):
    with pytest.raises(ValueError, match='no_such_dataset') as raised:
        sources.open_source('no_such_dataset', str(tmp_path))
    assert '\n' not in str(raised.value)


def test_batch_larger_than_the_dataset_is_rejected(digits_dir):
    source, info = open_digits(digits_dir)
    with pytest.raises(ValueError, match='exceeds'):
        train_stream(source, info, local_batch_size=NUM_DIGITS_TRAIN + 1)
