"""The pixel geometry of the augmentation and evaluation transforms, on sizes where the plausible
alternatives differ: odd margins (centre offsets rounded up or down), non-square and portrait
images (which side is scaled, truncation against rounding), windows touching the far edge
(inclusive offsets), reflection against symmetric or zero padding.

References are written out in numpy from fb.resnet.torch's `datasets/transforms.lua` (Scale,
CenterCrop, RandomSizedCrop) and the Wide ResNet code's CIFAR augmentation (reflection padding
of 4, random 32x32 crop, flip with probability 1/2). Only the random numbers are shared with the
code under test: `crop_window`'s uniform draws are taken from the same stateless key, and the
Lua logic is applied to them here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from sharesnet_jax.data import augment

# Non-square, portrait and landscape, odd and even, tiny and elongated.
SHAPES = [(37, 53), (53, 37), (25, 90), (90, 25), (31, 31), (27, 40), (100, 28), (29, 29),
          (41, 70), (64, 33)]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _key(i: int) -> tf.Tensor:
    return tf.constant([i, 11], tf.int64)


def _bicubic(image: np.ndarray, hw) -> np.ndarray:
    return tf.image.resize(image.astype(np.float32), hw, method="bicubic").numpy()


def _lua_scale_size(height: int, width: int, size: int) -> tuple[int, int]:
    """transforms.lua Scale: the shorter side to `size`, the longer one size * long / short,
    truncated (image.scale takes integer sizes)."""
    if height <= width:
        return size, int(math.floor(width * size / height))
    return int(math.floor(height * size / width)), size


def _lua_center_offsets(height: int, width: int, hw) -> tuple[int, int]:
    """transforms.lua CenterCrop: x1 = math.ceil((w - size) / 2), likewise y1."""
    return math.ceil((height - hw[0]) / 2), math.ceil((width - hw[1]) / 2)


def _uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("height,width", SHAPES)
def test_evaluation_view_scales_the_shorter_side_truncates_the_longer_and_rounds_offsets_up(
        height, width):
    hw = (24, 24)
    shorter = round(24 * 256 / 224)  # 27: the margin of 3 is odd, ceil and floor differ
    assert shorter == 27
    image = _image(height, width, seed=height * 1000 + width)
    new_h, new_w = _lua_scale_size(height, width, shorter)
    top, left = _lua_center_offsets(new_h, new_w, hw)
    expected = _uint8(_bicubic(image, (new_h, new_w))[top:top + 24, left:left + 24])
    got = augment.eval_image(image, augment="imagenet", image_shape=(24, 24, 3)).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("height,width", [(300, 413), (413, 300), (257, 500)])
def test_evaluation_view_at_224_scales_to_256(height, width):
    image = _image(height, width, seed=3)
    new_h, new_w = _lua_scale_size(height, width, 256)
    top, left = _lua_center_offsets(new_h, new_w, (224, 224))
    expected = _uint8(_bicubic(image, (new_h, new_w))[top:top + 224, left:left + 224])
    got = augment.eval_image(image, augment="imagenet", image_shape=(224, 224, 3)).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("height,width", [(9, 14), (14, 9), (10, 13), (11, 11)])
def test_center_crop_rounds_odd_margins_up(height, width):
    image = _image(height, width)
    top, left = _lua_center_offsets(height, width, (6, 6))
    got = augment.center_crop(tf.constant(image), (6, 6)).numpy()
    np.testing.assert_array_equal(got, image[top:top + 6, left:left + 6])


@pytest.mark.parametrize("height,width", [(37, 53), (53, 37), (3, 400), (400, 3), (30, 47)])
def test_scale_shorter_side_truncates_the_longer(height, width):
    got = augment.scale_shorter_side(tf.constant(_image(height, width)), 32).numpy()
    assert got.shape[:2] == _lua_scale_size(height, width, 32)


def _lua_crop_window(height: int, width: int, key: tf.Tensor):
    """RandomSizedCrop's window (transforms.lua L129-163) on crop_window's own draws: 10
    attempts, w = round(sqrt(a r)), h = round(sqrt(a / r)) (torch.round: floor(x + 0.5)),
    swapped with probability 1/2; the first that fits is placed at torch.random(0, H - h),
    torch.random(0, W - w), both inclusive. None when no attempt fits."""
    keys = tf.unstack(tf.random.experimental.stateless_split(key, num=4))
    area = tf.random.stateless_uniform([10], keys[0], 0.08, 1.0).numpy()
    aspect = tf.random.stateless_uniform([10], keys[1], 3 / 4, 4 / 3).numpy()
    swap = tf.random.stateless_uniform([10], keys[2]).numpy() < 0.5
    offsets = tf.random.stateless_uniform([2], keys[3]).numpy()
    for attempt in range(10):
        target = np.float32(area[attempt]) * np.float32(height) * np.float32(width)
        w = int(np.floor(np.sqrt(np.float32(target * aspect[attempt])) + np.float32(0.5)))
        h = int(np.floor(np.sqrt(np.float32(target / aspect[attempt])) + np.float32(0.5)))
        if swap[attempt]:
            w, h = h, w
        if 1 <= h <= height and 1 <= w <= width:
            top = int(np.float32(offsets[0]) * np.float32(height - h + 1))
            left = int(np.float32(offsets[1]) * np.float32(width - w + 1))
            return top, left, h, w
    return None


@pytest.mark.parametrize("height,width", [(37, 53), (200, 31), (9, 9), (20, 20), (3, 40)])
def test_crop_window_is_the_lua_window(height, width):
    far_edge = 0
    for i in range(60):
        top, left, h, w, found = (int(t) for t in augment.crop_window(height, width, _key(i)))
        expected = _lua_crop_window(height, width, _key(i))
        assert bool(found) == (expected is not None), i
        if expected is not None:
            assert (top, left, h, w) == expected, i
            far_edge += (top == height - h and h < height) or (left == width - w and w < width)
    if (height, width) in ((20, 20), (37, 53)):
        assert far_edge > 0  # the inclusive upper bound is reached


def test_crop_window_reaches_the_far_edges():
    """torch.random(0, H - h) is inclusive: windows touch the bottom and right edges."""
    bottom = right = 0
    for i in range(300):
        top, left, h, w, _ = (int(t) for t in augment.crop_window(20, 30, _key(i)))
        assert 0 <= top <= 20 - h and 0 <= left <= 30 - w
        bottom += top == 20 - h and h < 20
        right += left == 30 - w and w < 30
    assert bottom >= 5 and right >= 5


@pytest.mark.parametrize("height,width", [(37, 53), (60, 29), (3, 40)])
def test_random_sized_crop_resizes_the_lua_window_bicubic(height, width):
    image = _image(height, width, seed=5)
    for i in range(8):
        got = augment.random_sized_crop(tf.constant(image), _key(i), (16, 16), 3).numpy()
        window = _lua_crop_window(height, width, _key(i))
        if window is None:  # the fallback: Scale(16) then CenterCrop(16)
            new_h, new_w = _lua_scale_size(height, width, 16)
            top, left = _lua_center_offsets(new_h, new_w, (16, 16))
            expected = _bicubic(image, (new_h, new_w))[top:top + 16, left:left + 16]
        else:
            top, left, h, w = window
            expected = _bicubic(image[top:top + h, left:left + w], (16, 16))
        np.testing.assert_allclose(got, expected, atol=1e-3, err_msg=str((i, window)))


@pytest.mark.parametrize("height,width", [(12, 10), (9, 13), (32, 32)])
def test_cifar_view_is_a_flipped_or_plain_window_of_the_reflection_padded_image(height, width):
    """Pad 4 by reflection (numpy 'reflect': the edge pixel is not repeated), take a window of
    the image's size at any of the 9 x 9 offsets, flip it with probability 1/2."""
    image = _image(height, width, seed=7)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = {}
    for top in range(9):
        for left in range(9):
            view = padded[top:top + height, left:left + width]
            windows[view.tobytes()] = (top, left, False)
            windows.setdefault(view[:, ::-1].tobytes(), (top, left, True))
    seen = []
    for i in range(250):
        got = augment.train_image(tf.constant(image), _key(i), augment="cifar",
                                  image_shape=(height, width, 3)).numpy()
        assert got.shape == image.shape and got.dtype == np.uint8
        assert got.tobytes() in windows, f"key {i}: not a window of the reflection-padded image"
        seen.append(windows[got.tobytes()])
    tops, lefts, flips = zip(*seen)
    assert set(tops) == set(range(9)) and set(lefts) == set(range(9))
    assert 0.35 < np.mean(flips) < 0.65


def test_colour_constants_and_factor_range_are_fb_resnet_torchs():
    """transforms.lua's literals: Lighting's eigenvalues and eigenvectors (rows), grayscale's
    luma weights; ColorJitter's factors spread over all of [1 - 0.4, 1 + 0.4]."""
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]])
    x = _image(6, 5).astype(np.float32) / 255.0
    for i in range(5):
        alpha = np.array([0.1, -0.2, 0.3]) * (i + 1)
        got = augment.apply_colour(tf.constant(x), tf.ones(3), tf.constant([0, 1, 2]),
                                   tf.constant(alpha, tf.float32)).numpy()
        np.testing.assert_allclose(got, x + eigvec @ (alpha * eigval), atol=1e-6)
    grey = augment.grayscale(tf.constant(x)).numpy()
    np.testing.assert_allclose(grey[..., 1], x @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    factors = np.stack([augment.colour_draws(_key(i), 0.4, 0.1)[0].numpy() for i in range(60)])
    assert factors.min() < 0.65 and factors.max() > 1.35
    assert np.all((factors >= 0.6) & (factors <= 1.4))
