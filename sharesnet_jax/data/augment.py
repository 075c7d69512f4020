"""Image transformations of the pipelines: pure functions of one image (and, for training, one
stateless random key), run inside tf.data maps.

Every random choice draws from a key derived from (seed, epoch, position in the epoch), so the
same example always gets the same augmentation, which is what makes a resumed run exact.
Images enter as uint8 HWC (or, for ImageNet-style training on JPEG files, the encoded bytes, so
that only the crop window is decoded) and leave as uint8 of the model's input shape.
"""

from __future__ import annotations

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TF's import, to silence its banner.

import tensorflow as tf  # noqa: E402

from sharesnet_jax.data.info import AUGMENT_STYLES  # noqa: E402

CIFAR_PADDING = 4
IMAGENET_EVAL_RESIZE_RATIO = 256 / 224
IMAGENET_CROP_AREA_RANGE = (0.08, 1.0)
IMAGENET_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
IMAGENET_CROP_MAX_ATTEMPTS = 10

# fb.resnet.torch's PCA lighting (Krizhevsky et al. 2012): ImageNet RGB eigenvalues and
# eigenvectors (columns), for images in 0..1.
LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


def _check_style(augment: str) -> None:
    if augment not in AUGMENT_STYLES:
        raise ValueError(f'augment={augment!r} is not one of {", ".join(map(repr, AUGMENT_STYLES))}')


def train_image(image: tf.Tensor, key: tf.Tensor, *, augment: str,
                image_shape: tuple[int, int, int], color_jitter: float = 0.0,
                pca_lighting: float = 0.0) -> tf.Tensor:
    """One training example as the model sees it, augmented in `augment`'s style."""
    _check_style(augment)
    hw = tuple(image_shape[:2])
    crop_key, flip_key, colour_key = tf.unstack(
        tf.random.experimental.stateless_split(key, num=3))
    if augment == 'imagenet':
        cropped = random_resized_crop(image, crop_key, hw, image_shape[2])
        flipped = tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)
        if image_shape[2] == 3 and (color_jitter or pca_lighting):
            flipped = jitter_colour(flipped, colour_key, color_jitter, pca_lighting)
        return tf.ensure_shape(flipped, image_shape)
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
    """The deterministic view evaluation (and prediction) feeds: ImageNet style resizes the
    shorter side to 256/224 of the crop and takes the centre; the others fit the image to size."""
    _check_style(augment)
    hw = tuple(image_shape[:2])
    if augment == 'imagenet':
        image = resize_shorter_side_and_center_crop(image, hw, IMAGENET_EVAL_RESIZE_RATIO)
    else:
        image = fit_to_size(image, hw)
    return tf.ensure_shape(image, image_shape)


def jitter_colour(image: tf.Tensor, key: tf.Tensor, jitter: float, lighting: float) -> tf.Tensor:
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
        shift = tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL))
        x = x + shift
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)


def random_resized_crop(
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
    return resize_uint8(cropped, hw)


def resize_shorter_side_and_center_crop(
    image: tf.Tensor, hw: tuple[int, int], resize_ratio: float
) -> tf.Tensor:
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    shorter_side_target = round(max(hw) * resize_ratio)
    scale = shorter_side_target / tf.minimum(height, width)
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
    return resize_shorter_side_and_center_crop(image, hw, resize_ratio=1.0)


def resize_uint8(image: tf.Tensor, hw) -> tf.Tensor:
    resized = tf.image.resize(image, hw, method='bilinear')
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
