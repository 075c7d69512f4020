"""The per-channel statistics each dataset is normalised with, as the authors' codes hard-code
them: the Wide ResNet code's CIFAR-10 mean {125.3, 123.0, 113.9} and std {63.0, 62.1, 66.7}
(0..255, train.lua), used for CIFAR-100 too; fb.resnet.torch's ImageNet mean/std."""

import pytest

from sharesnet_jax.data import pipeline, sources
from tests.helpers import write_tiny_tfds_dataset

WRN_CIFAR = ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7))
FB_IMAGENET = ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255))


@pytest.mark.parametrize("dataset,eval_split,expected,image_size", [
    ("cifar10", "test", WRN_CIFAR, None), ("cifar100", "test", WRN_CIFAR, None),
    ("imagenet2012", "validation", FB_IMAGENET, 32)])
def test_known_datasets_use_the_authors_statistics(tmp_path, dataset, eval_split, expected,
                                                   image_size):
    # Random images: measured statistics would be about 127.5 / 73.6, far from the authors'.
    data_dir = write_tiny_tfds_dataset(tmp_path, dataset, {"train": 4, eval_split: 2})
    info = pipeline.load_info(sources.open_source(dataset, data_dir), image_size=image_size)
    assert info.mean == pytest.approx(expected[0], abs=0.06)
    assert info.std == pytest.approx(expected[1], abs=0.06)
