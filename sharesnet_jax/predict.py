"""Class probabilities from a trained workdir, for arrays in Python or image files on the
command line:

    python -m sharesnet_jax.predict --workdir=DIR IMAGE [IMAGE ...]
    python -m sharesnet_jax.predict --workdir=model.jaxexport IMAGE [IMAGE ...]

Preprocessing follows the checkpoint's own record (input size, per-channel mean/std, CIFAR- or
ImageNet-style evaluation crop) and runs the evaluation pipeline's own transform
(`data.augment.eval_image`, eagerly), so predictions see exactly what evaluation saw.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import warnings
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from sharesnet_jax import cli, serving
from sharesnet_jax.classifier import from_checkpoint
from sharesnet_jax.data import hide_accelerators_from_tensorflow
from sharesnet_jax.data.augment import eval_image
from sharesnet_jax.errors import UserError
from sharesnet_jax.safe_files import kind_of


class Predictor:
    """Maps uint8 HWC images of any size to class probabilities with a trained model: the
    newest checkpoint of a workdir, or an exported artifact (`python -m sharesnet_jax.export`)."""

    def __init__(self, source: str):
        hide_accelerators_from_tensorflow()  # it runs the eval transform; JAX owns the devices
        if os.path.isfile(source):  # checkpoints are folders; a file is an export
            served = serving.load(source)
            self.class_names: tuple[str, ...] = served.class_names
            self.image_shape = served.image_shape
            self.augment = served.metadata["eval_crop"]
            self._logits = served.logits
            return
        classifier = from_checkpoint(source)
        self.class_names = classifier.record.class_names
        self.image_shape = classifier.record.image_shape
        self.augment = classifier.record.augment  # the evaluation style the run resolved
        self._logits = jax.jit(classifier.logits)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        channels = self.image_shape[2]
        if image.ndim == 2:
            image = np.repeat(image[..., None], channels, axis=-1)
        if image.ndim != 3 or image.shape[2] != channels or image.dtype != np.uint8:
            raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}: expected "
                             f"uint8 (H, W, {channels})")
        return np.asarray(eval_image(image, augment=self.augment, image_shape=self.image_shape))

    def logits(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, num_classes) float32 logits for N images (a list of arrays, or one NHWC array)."""
        batch = np.stack([self.preprocess(image) for image in images])
        return np.asarray(self._logits(batch))

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, num_classes) probabilities for N images (a list of arrays, or one NHWC array)."""
        return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-probabilities)[:k]
        return [(self.class_names[i], float(probabilities[i])) for i in order]


def load(source: str) -> Predictor:
    """The newest checkpoint of a workdir, or an exported artifact, as a callable: images ->
    class probabilities."""
    return Predictor(source)


# Decoded pixels an input may have: 100 megapixels (a 10000x10000 photograph, 300 MB as RGB).
# The header says the size before anything is decoded, so a decompression bomb (a small file of
# hundreds of megapixels) is refused without allocating its pixels.
MAX_PIXELS = 100_000_000


def read_image(path: str, channels: int = 3) -> np.ndarray:
    """A file as uint8 HWC; palette, grey and alpha images are converted to the model's RGB.
    16-bit images are scaled to 8 bits and float images with values in [0, 1] to 0..255 (PIL's
    own conversion would clip the former to 255 and truncate the latter to 0). Only regular
    files are read: a FIFO or device is refused at once instead of blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ValueError(f"cannot read image: {err.strerror or err}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(f"cannot read image: it is {kind_of(mode)}, not a regular file")
    with os.fdopen(fd, "rb") as file:
        try:
            with warnings.catch_warnings():
                # Ours is the limit below; PIL's own (a warning, then an error at twice it)
                # would print a warning line of its own for sizes between the two.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(file) as image:
                    width, height = image.size
                    if width * height > MAX_PIXELS:
                        raise ValueError(f"{width}x{height} pixels, more than the {MAX_PIXELS:,} "
                                         "an input may have (a decompression bomb?)")
                    if image.mode in ("I", "F") or image.mode.startswith("I;"):
                        image = Image.fromarray(_to_uint8(np.asarray(image), image.mode))
                    image = image.convert("RGB" if channels == 3 else "L")
                    return np.asarray(image)
        except ValueError as err:
            raise ValueError(f"cannot read image: {err}") from None
        except Exception as err:  # noqa: BLE001 - PIL's decoders raise many kinds on bad files
            raise ValueError(f"cannot read image: {type(err).__name__}: {err}") from None


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """One grey channel of 16/32-bit integers or floats -> uint8."""
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"float image (mode {mode}) with values outside [0, 1] "
                             f"({np.nanmin(pixels):g}..{np.nanmax(pixels):g}): save it as 8- "
                             "or 16-bit, or scaled to [0, 1]")
        return np.round(pixels * 255).astype(np.uint8)
    if pixels.min() < 0 or pixels.max() > 65535:
        raise ValueError(f"integer image (mode {mode}) with values outside 0..65535")
    return np.round(pixels.astype(np.float64) * (255 / 65535)).astype(np.uint8)


@cli.one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Top-5 classes of images with a trained model.")
    parser.add_argument("--workdir", required=True,
                        help="a training workdir (or checkpoint), or an exported artifact")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top={args.top} must be at least 1")
    predictor = load(args.workdir)
    failures = 0
    for path in args.images:
        try:
            probabilities = predictor([read_image(path, predictor.image_shape[2])])[0]
        except ValueError as err:
            failures += 1
            cli.fail(f"{path}: {err}")
            continue
        ranked = ", ".join(f"{name} {p:.3f}" for name, p in predictor.top_k(probabilities, args.top))
        print(f"{path}: {ranked}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
