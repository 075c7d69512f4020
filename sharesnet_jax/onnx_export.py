"""ONNX export of a classifier function through jax2onnx, checked with onnxruntime before the
file is written. Needs the `onnx` extra (`pip install -e ".[onnx]"`)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import logging
from typing import Any, Callable

import jax
import numpy as np

from sharesnet_jax import serving
from sharesnet_jax.errors import UserError

# ONNX Runtime's float32 convolutions sum in another order than XLA's: logits differ in the
# last bits. A wrong graph (layout, weights, a missing normalisation) differs by far more.
TOLERANCE = 1e-4

# jax2onnx 0.12.5 logs, with their traces, the dm_pix plugins that fail to import on jax 0.10
# (our models use none of them).
logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)


def require_onnx() -> None:
    """Called before any expensive work: a missing extra is one line saying how to install it."""
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UserError(f"--onnx needs the onnx extra ({err}): "
                        "pip install -e \".[onnx]\"") from None


def to_onnx(logits: Callable[[jax.Array], jax.Array], image_shape: tuple[int, int, int],
            metadata: dict[str, Any]) -> bytes:
    """The serialized ONNX model of `logits` (input 'images': (batch, H, W, C) float32 pixel
    values 0..255, output 'logits'), with `metadata` as its JSON metadata property."""
    import jax2onnx

    # jax2onnx's Linen plugins print debugging lines to stdout; keep the console ours.
    with contextlib.redirect_stdout(io.StringIO()):
        model = jax2onnx.to_onnx(logits, [("batch", *image_shape)], model_name=metadata["model"],
                                 input_names=["images"], output_names=["logits"])
    entry = model.metadata_props.add()
    entry.key, entry.value = "sharesnet_jax", json.dumps(metadata)
    return model.SerializeToString()


def run_onnx(serialized: bytes, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its shape-merging warnings about our NHWC graph
    session = onnxruntime.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": np.asarray(images, np.float32)})[0]


def max_difference(serialized: bytes, logits: Callable[[jax.Array], jax.Array],
                   image_shape: tuple[int, int, int], seed: int = 0) -> float:
    """Largest |ONNX - JAX| logit over random pixel images at batch 1 and at an odd batch."""
    images = np.random.RandomState(seed).randint(0, 256, (5, *image_shape)).astype(np.float32)
    worst = 0.0
    for batch in (images[:1], images):
        expected = np.asarray(jax.jit(logits)(batch))
        worst = max(worst, float(np.abs(run_onnx(serialized, batch) - expected).max()))
    return worst


def write_onnx(path: str, logits: Callable[[jax.Array], jax.Array],
               image_shape: tuple[int, int, int], metadata: dict[str, Any]) -> float:
    """Converts, checks the ONNX logits against JAX's (refusing to write a file that disagrees
    by more than TOLERANCE) and writes atomically. Returns the largest difference seen."""
    try:
        serialized = to_onnx(logits, image_shape, metadata)
        difference = max_difference(serialized, logits, image_shape)
    except Exception as err:  # noqa: BLE001 - a converter or runtime failure, in one line
        first = (str(err).strip().splitlines() or [""])[0][:240]
        raise UserError(f"jax2onnx {importlib.metadata.version('jax2onnx')} cannot convert "
                        f"{metadata['model']} into an ONNX graph that onnxruntime runs "
                        f"({type(err).__name__}: {first}); {path} not written") from None
    if not difference <= TOLERANCE:
        raise UserError(f"the ONNX conversion of {metadata['model']} gives logits up to "
                        f"{difference:.3g} away from JAX's (accepted: {TOLERANCE}); {path} not "
                        "written")
    with serving.atomic_file(path) as file:
        file.write(serialized)
    return difference
