"""Image transformations of the pipelines: pure functions of one image (and, for training, one
stateless random key), run inside tf.data maps and, for prediction, eagerly.

Every random choice draws from a key derived from (seed, epoch, position in the epoch), so the
same example always gets the same augmentation, which is what makes a resumed run exact.
Images enter as uint8 HWC (or, for ImageNet-style training on JPEG files, the encoded bytes, so
that only the crop window is decoded) and leave as uint8 of the model's input shape.

ImageNet style follows fb.resnet.torch (`datasets/transforms.lua`, `datasets/imagenet.lua`, the
code the paper's ImageNet nets were trained with): bicubic resizing; RandomSizedCrop with its
fallback; colour jitter (brightness, contrast, saturation in a random order per image) and PCA
lighting, all in float without clipping; evaluation scales the shorter side to 256 (for a 224
crop) and takes the centre. The only rounding is the final one to uint8, which the device-side
normalisation then reads (fb.resnet.torch never rounds; the difference is below one grey level
before jitter, and jittered values beyond 0..255 are clipped there).
"""

from __future__ import annotations

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TF's import, to silence its banner.

import tensorflow as tf  # noqa: E402

from sharesnet_jax.data.info import AUGMENT_STYLES  # noqa: E402
from sharesnet_jax.errors import not_one_of  # noqa: E402

CIFAR_PADDING = 4
IMAGENET_EVAL_RESIZE_RATIO = 256 / 224
# RandomSizedCrop (transforms.lua L129-163): area fraction and aspect ratio drawn uniformly,
# width and height swapped with probability 1/2, at most 10 attempts.
IMAGENET_CROP_AREA_RANGE = (0.08, 1.0)
IMAGENET_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
IMAGENET_CROP_MAX_ATTEMPTS = 10
# Luma weights of fb.resnet.torch's grayscale (transforms.lua, `grayscale`).
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)

# fb.resnet.torch's PCA lighting (Krizhevsky et al. 2012): ImageNet RGB eigenvalues and
# eigenvectors (rows as in transforms.lua L183-203), for images in 0..1.
LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


def _check_style(augment: str) -> None:
    if augment not in AUGMENT_STYLES:
        raise ValueError(not_one_of("augment", augment, AUGMENT_STYLES))


def train_image(image: tf.Tensor, key: tf.Tensor, *, augment: str,
                image_shape: tuple[int, int, int], color_jitter: float = 0.0,
                pca_lighting: float = 0.0) -> tf.Tensor:
    """One training example as the model sees it, augmented in `augment`'s style."""
    _check_style(augment)
    hw = tuple(image_shape[:2])
    crop_key, flip_key, colour_key = tf.unstack(
        tf.random.experimental.stateless_split(key, num=3))
    if augment == 'imagenet':
        x = random_sized_crop(image, crop_key, hw, image_shape[2]) / 255.0
        if image_shape[2] == 3 and (color_jitter or pca_lighting):
            x = jitter_colour(x, colour_key, color_jitter, pca_lighting)
        x = tf.image.stateless_random_flip_left_right(x, seed=flip_key)
        return tf.ensure_shape(to_uint8(x * 255.0), image_shape)
    if augment == 'cifar':
        padded = tf.pad(
            fit_to_size(image, hw),
            [[CIFAR_PADDING, CIFAR_PADDING], [CIFAR_PADDING, CIFAR_PADDING], [0, 0]],
            mode='REFLECT',
        )
        cropped = tf.image.stateless_random_crop(padded, image_shape, seed=crop_key)
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)
    return eval_image(image, augment=augment, image_shape=image_shape)


def eval_image(image: tf.Tensor, *, augment: str, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """The deterministic view evaluation and prediction feed: ImageNet style scales the shorter
    side to 256/224 of the crop (bicubic) and takes the centre; the others fit the image to size."""
    _check_style(augment)
    hw = tuple(image_shape[:2])
    if augment == 'imagenet':
        shorter_side = round(max(hw) * IMAGENET_EVAL_RESIZE_RATIO)
        image = to_uint8(center_crop(scale_shorter_side(image, shorter_side), hw))
    else:
        image = fit_to_size(image, hw)
    return tf.ensure_shape(image, image_shape)


def jitter_colour(x: tf.Tensor, key: tf.Tensor, jitter: float, lighting: float) -> tf.Tensor:
    """fb.resnet.torch's ColorJitter then Lighting, on a float RGB image in 0..1, unclipped."""
    return apply_colour(x, *colour_draws(key, jitter, lighting))


def colour_draws(key: tf.Tensor, jitter: float,
                 lighting: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The random numbers of one image's colour augmentation: the brightness, contrast and
    saturation factors in [1-j, 1+j], the order to apply them in (`RandomOrder`: a permutation
    per image) and the lighting coefficients alpha ~ N(0, lighting)."""
    factor_key, order_key, light_key = tf.unstack(
        tf.random.experimental.stateless_split(key, num=3))
    factors = tf.random.stateless_uniform([3], factor_key, 1.0 - jitter, 1.0 + jitter)
    order = tf.argsort(tf.random.stateless_uniform([3], order_key))
    alpha = tf.random.stateless_normal([3], light_key, stddev=lighting)
    return factors, order, alpha


def apply_colour(x: tf.Tensor, factors: tf.Tensor, order: tf.Tensor,
                 alpha: tf.Tensor) -> tf.Tensor:
    """Brightness blends with black, contrast with the mean grey level, saturation with each
    pixel's grey (blend(a, b, f) = f a + (1 - f) b), in `order`; then lighting adds
    eigvec . (alpha * eigval) to every pixel (transforms.lua L165-203)."""
    blends = (tf.zeros_like,  # brightness
              lambda y: tf.fill(tf.shape(y), tf.reduce_mean(grayscale(y))),  # contrast
              grayscale)  # saturation
    for position in range(3):
        x = tf.switch_case(order[position], [
            (lambda blend=blend, i=i: x * factors[i] + (1.0 - factors[i]) * blend(x))
            for i, blend in enumerate(blends)])
    return x + tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL))


def grayscale(x: tf.Tensor) -> tf.Tensor:
    """Luma of a float RGB image, broadcast back to its three channels."""
    grey = tf.reduce_sum(x * tf.constant(GRAYSCALE_WEIGHTS, x.dtype), axis=-1, keepdims=True)
    return tf.broadcast_to(grey, tf.shape(x))


def random_sized_crop(image: tf.Tensor, key: tf.Tensor, hw: tuple[int, int],
                      channels: int) -> tf.Tensor:
    """fb.resnet.torch's RandomSizedCrop as float pixels of size `hw` (bicubic, unclipped): the
    window `crop_window` draws, or, when none of its candidates fits, the shorter side scaled to
    size and the centre cropped. On JPEG bytes only the crop window is decoded."""
    encoded = image.dtype == tf.string
    shape = tf.image.extract_jpeg_shape(image) if encoded else tf.shape(image)
    top, left, crop_h, crop_w, found = crop_window(shape[0], shape[1], key)

    def crop() -> tf.Tensor:
        if encoded:
            window = tf.stack([top, left, crop_h, crop_w])
            cropped = tf.image.decode_and_crop_jpeg(image, window, channels=channels)
        else:
            cropped = tf.slice(image, [top, left, 0], [crop_h, crop_w, -1])
        return resize_bicubic(cropped, hw)

    def fallback() -> tf.Tensor:
        decoded = tf.image.decode_jpeg(image, channels=channels) if encoded else image
        return center_crop(scale_shorter_side(decoded, max(hw)), hw)

    return tf.ensure_shape(tf.cond(found, crop, fallback), (*hw, channels))


def crop_window(height: tf.Tensor, width: tf.Tensor, key: tf.Tensor):
    """(top, left, crop height, crop width, found) of RandomSizedCrop (transforms.lua L129-163):
    up to 10 candidates of area a ~ U(8%, 100%) of the image and aspect r ~ U(3/4, 4/3),
    w = round(sqrt(a r)), h = round(sqrt(a / r)), swapped with probability 1/2; the first that
    fits is placed uniformly. `found` is false when none fits."""
    keys = tf.unstack(tf.random.experimental.stateless_split(key, num=4))
    attempts = IMAGENET_CROP_MAX_ATTEMPTS
    area = tf.random.stateless_uniform([attempts], keys[0], *IMAGENET_CROP_AREA_RANGE)
    aspect = tf.random.stateless_uniform([attempts], keys[1], *IMAGENET_CROP_ASPECT_RANGE)
    swap = tf.random.stateless_uniform([attempts], keys[2]) < 0.5
    image_h, image_w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    target = area * image_h * image_w
    w = tf.floor(tf.sqrt(target * aspect) + 0.5)  # torch.round: halves away from zero
    h = tf.floor(tf.sqrt(target / aspect) + 0.5)
    w, h = tf.where(swap, h, w), tf.where(swap, w, h)
    fits = (h <= image_h) & (w <= image_w) & (h >= 1) & (w >= 1)
    first = tf.argmax(tf.cast(fits, tf.int32))
    crop_h, crop_w = tf.cast(h[first], tf.int32), tf.cast(w[first], tf.int32)
    offsets = tf.random.stateless_uniform([2], keys[3])  # torch.random(0, H - h), inclusive
    top = tf.cast(offsets[0] * tf.cast(height - crop_h + 1, tf.float32), tf.int32)
    left = tf.cast(offsets[1] * tf.cast(width - crop_w + 1, tf.float32), tf.int32)
    return top, left, crop_h, crop_w, tf.reduce_any(fits)


def resize_bicubic(image: tf.Tensor, hw) -> tf.Tensor:
    """Bicubic resize to float pixels, without clipping the overshoot (as Torch's image.scale)."""
    return tf.image.resize(tf.cast(image, tf.float32), hw, method='bicubic')


def scale_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """fb.resnet.torch's Scale: the shorter side to `size`, the longer one in proportion,
    truncated (transforms.lua L36-50), bicubic; float pixels."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    longer = lambda a, b: tf.cast(tf.cast(a, tf.float64) * size / tf.cast(b, tf.float64), tf.int32)
    new_hw = tf.cond(height <= width, lambda: tf.stack([size, longer(width, height)]),
                     lambda: tf.stack([longer(height, width), size]))
    return resize_bicubic(image, new_hw)


def center_crop(image: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
    """The centre `hw` window, offsets rounded up as fb.resnet.torch's CenterCrop does."""
    shape = tf.shape(image)
    top, left = (shape[0] - hw[0] + 1) // 2, (shape[1] - hw[1] + 1) // 2
    return tf.slice(image, [top, left, 0], [hw[0], hw[1], -1])


def resize_shorter_side_and_center_crop(image: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
    """CIFAR-style fitting of a variable-size image: the shorter side to the crop's longer side
    (bilinear), then the centre."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = max(hw) / tf.minimum(height, width)
    resized_h = tf.maximum(hw[0], tf.cast(tf.round(height * scale), tf.int32))
    resized_w = tf.maximum(hw[1], tf.cast(tf.round(width * scale), tf.int32))
    resized = resize_uint8(image, tf.stack([resized_h, resized_w]))
    top, left = (resized_h - hw[0]) // 2, (resized_w - hw[1]) // 2
    return tf.image.crop_to_bounding_box(resized, top, left, hw[0], hw[1])


def fit_to_size(image: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
    """Fixed-size images are kept (or resized); variable-size ones are center-cropped."""
    static_hw = tuple(image.shape[:2])
    if static_hw == tuple(hw):
        return image
    if None not in static_hw:
        return resize_uint8(image, hw)
    return resize_shorter_side_and_center_crop(image, hw)


def resize_uint8(image: tf.Tensor, hw) -> tf.Tensor:
    return to_uint8(tf.image.resize(image, hw, method='bilinear'))


def to_uint8(pixels: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)
