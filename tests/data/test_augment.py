"""The augmentation ops alone, against fb.resnet.torch's formulas written out in numpy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from sharesnet_jax.data import augment

GREY = np.array(augment.GRAYSCALE_WEIGHTS)


def _key(i: int) -> tf.Tensor:
    return tf.constant([i, 7], tf.int64)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _colour_reference(x: np.ndarray, factors, order, alpha) -> np.ndarray:
    """transforms.lua: Brightness, Contrast, Saturation (blend with black / mean grey / grey),
    in a random order, then Lighting; nothing clipped."""
    x = x.astype(np.float64)
    for index in order:
        f = float(factors[index])
        grey = (x * GREY).sum(-1, keepdims=True)
        other = [np.zeros_like(x), np.full_like(x, grey.mean()), np.broadcast_to(grey, x.shape)]
        x = f * x + (1 - f) * other[index]
    shift = np.asarray(augment.LIGHTING_EIGVEC) @ (np.asarray(alpha) * augment.LIGHTING_EIGVAL)
    return x + shift


def test_colour_jitter_follows_fb_resnet_torch_in_a_random_order_without_clipping():
    x = _image(20, 30).astype(np.float32) / 255.0
    orders = set()
    for i in range(40):
        factors, order, alpha = (t.numpy() for t in augment.colour_draws(_key(i), 0.4, 0.1))
        orders.add(tuple(order))
        assert np.all((factors >= 0.6) & (factors <= 1.4))
        got = augment.jitter_colour(tf.constant(x), _key(i), 0.4, 0.1).numpy()
        np.testing.assert_allclose(got, _colour_reference(x, factors, order, alpha), atol=1e-5)
    assert orders == set(itertools.permutations(range(3)))  # every order occurs
    bright = augment.apply_colour(tf.constant(x), tf.constant([1.4, 1.0, 1.0]),
                                  tf.constant([0, 1, 2]), tf.zeros(3)).numpy()
    assert bright.max() > 1.0  # floats, not clipped to 0..1 (or 0..255)


def test_evaluation_scales_the_shorter_side_bicubic_and_crops_the_centre():
    image = _image(300, 411)
    got = augment.eval_image(image, augment="imagenet", image_shape=(224, 224, 3)).numpy()
    # Scale(256): the longer side is 411 * 256 / 300 = 350.72, truncated; CenterCrop offsets
    # ceil((256 - 224) / 2) = 16 and ceil((350 - 224) / 2) = 63.
    resized = tf.image.resize(image.astype(np.float32), (256, 350), method="bicubic").numpy()
    expected = np.clip(np.round(resized[16:240, 63:287]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_random_sized_crop_draws_fb_crops_and_falls_back_to_scale_and_centre_crop():
    image = _image(60, 80)
    sizes = set()
    for i in range(20):
        crop = augment.random_sized_crop(tf.constant(image), _key(i), (32, 32), 3).numpy()
        assert crop.shape == (32, 32, 3) and crop.dtype == np.float32
        np.testing.assert_array_equal(
            crop, augment.random_sized_crop(tf.constant(image), _key(i), (32, 32), 3).numpy())
        sizes.add(float(crop.mean()))
    assert len(sizes) == 20  # a different crop per key
    # No candidate fits a 3-pixel-high strip (its crops need sides >= sqrt(0.08 * area)).
    strip = _image(3, 400)
    got = augment.random_sized_crop(tf.constant(strip), _key(0), (32, 32), 3).numpy()
    expected = augment.center_crop(augment.scale_shorter_side(strip, 32), (32, 32)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_crop_windows_follow_the_area_and_aspect_ranges_and_fit():
    height, width = 200, 300
    fractions, aspects = [], []
    for i in range(300):
        top, left, h, w, found = (int(t) for t in augment.crop_window(height, width, _key(i)))
        assert found and 0 <= top <= height - h and 0 <= left <= width - w
        fractions.append(h * w / (height * width))
        aspects.append(w / h)
    assert min(fractions) > 0.075 and max(fractions) <= 1.0
    # The first of 10 candidates that fits, as transforms.lua draws them (numpy, 20,000 times).
    rng = np.random.default_rng(0)
    reference = []
    for _ in range(20_000):
        for _ in range(10):
            area = rng.uniform(0.08, 1.0) * height * width
            ratio = rng.uniform(3 / 4, 4 / 3)
            w, h = np.floor(np.sqrt(area * ratio) + 0.5), np.floor(np.sqrt(area / ratio) + 0.5)
            if rng.uniform() < 0.5:
                w, h = h, w
            if h <= height and w <= width:
                reference.append(h * w / (height * width))
                break
    assert abs(np.mean(fractions) - np.mean(reference)) < 0.05
    aspects = np.array(aspects)
    in_range = (aspects > 0.74) & (aspects < 1.35)
    swapped = (1 / aspects > 0.74) & (1 / aspects < 1.35)
    assert np.all(in_range | swapped)


@pytest.mark.parametrize("style", ["imagenet", "cifar"])
def test_training_views_are_uint8_of_the_model_shape_and_deterministic(style):
    image = _image(47, 37)
    view = lambda i: augment.train_image(tf.constant(image), _key(i), augment=style,
                                         image_shape=(32, 32, 3), color_jitter=0.4,
                                         pca_lighting=0.1).numpy()
    first = view(1)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, view(1))
    assert not np.array_equal(first, view(2))


def test_unknown_style_is_a_value_error():
    with pytest.raises(ValueError, match="augment='random'"):
        augment.eval_image(_image(8, 8), augment="random", image_shape=(8, 8, 3))
    assert math.isclose(augment.IMAGENET_EVAL_RESIZE_RATIO, 256 / 224)
