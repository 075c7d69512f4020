"""Exported classifiers (`python -m sharesnet_jax.export`): the file format, and a loader that
needs jax and numpy alone.

Serving machines should not need Flax, TensorFlow or this package: this module imports only the
standard library, numpy and jax (this package's error type when it is installed), so it can be
copied on its own next to the artifact. An artifact is a zip file of two members:

- `metadata.json`: model name, class names, input shape (H, W, C), the run's per-channel
  mean/std (already applied inside the model), its evaluation crop style, the source checkpoint
  and step, the platforms it was compiled for, the jax version that wrote it, and the SHA-256 of
  the model member;
- `model.jaxexport`: `jax.export.Exported.serialize()` of `images -> logits`, weights embedded,
  batch dimension symbolic. Images are NHWC float32 pixel values 0..255 at the input size
  (uint8 arrays are converted exactly); the resize/crop to that size is the caller's
  (`metadata['eval_crop']`; `sharesnet_jax.predict` does it for image files).

Compatibility (jax.export's window): jax releases up to 6 months newer than the one that wrote an
artifact load it; older ones may not. The metadata names the writer's jax version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any, BinaryIO, Iterator

import jax
import numpy as np
from jax import export

try:
    from sharesnet_jax.errors import UserError as _Base
except ImportError:  # the module copied alone to a serving machine
    _Base = ValueError

FORMAT = "sharesnet_jax.export/1"
METADATA = "metadata.json"
MODEL = "model.jaxexport"


class ArtifactError(_Base):
    """A file that is not a readable exported classifier (truncated, corrupted, another format)."""


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """A file to write `path` through: a temporary file in the same folder, synced and renamed
    onto `path` when the block ends, removed if it fails. An interrupted export (a kill, a full
    disk) never leaves a half-written file under `path` nor destroys an older one there."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide it from other users
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write(path: str, serialized: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    """Writes the artifact atomically; returns the metadata as stored (with the format name and
    the model member's SHA-256)."""
    metadata = {"format": FORMAT, **metadata,
                "model_sha256": hashlib.sha256(serialized).hexdigest()}
    with atomic_file(path) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(METADATA, json.dumps(metadata, indent=1))
        archive.writestr(MODEL, bytes(serialized))
    return metadata


def read(path: str) -> tuple[dict[str, Any], bytes]:
    """(metadata, serialized model) of an artifact; anything wrong is one `ArtifactError` line."""
    expected = f"a sharesnet_jax export (a zip of {METADATA} and {MODEL})"
    if not os.path.isfile(path):
        raise ArtifactError(f"{path!r} is not a file: expected {expected}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {METADATA, MODEL} <= names:
                raise ArtifactError(f"{path} lacks {', '.join(sorted({METADATA, MODEL} - names))}"
                                    f": it is not {expected}")
            metadata = json.loads(archive.read(METADATA))
            serialized = archive.read(MODEL)
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as err:
        # A truncated file has lost its zip directory; flipped bytes fail the zip's CRC-32.
        raise ArtifactError(f"cannot read {path} ({type(err).__name__}: {err}): it is truncated, "
                            f"corrupted or not {expected}; export it again") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise ArtifactError(f"{path} has format {found!r}, this loader reads {FORMAT!r}")
    if hashlib.sha256(serialized).hexdigest() != metadata.get("model_sha256"):
        raise ArtifactError(f"{path}: {MODEL} does not match the SHA-256 its metadata records: "
                            "the file is corrupted; export it again")
    return metadata, serialized


class ServedClassifier:
    """An exported classifier: `logits(images)` for NHWC images at `metadata['image_shape']`."""

    def __init__(self, path: str):
        self.metadata, serialized = read(path)
        try:
            self.exported = export.deserialize(bytearray(serialized))
        except Exception as err:  # noqa: BLE001 - flatbuffer/MLIR errors of a bad payload
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ArtifactError(f"cannot load the model in {path} ({type(err).__name__}: "
                                f"{first}); written by jax {self.metadata.get('jax_version')}, "
                                f"this is jax {jax.__version__}") from None
        platform = jax.default_backend()
        if platform not in self.exported.platforms:
            raise ArtifactError(f"{path} was exported for {', '.join(self.exported.platforms)}, "
                                f"not for this {platform!r} machine: export it with "
                                f"--platforms={','.join(self.exported.platforms)},{platform}")
        self.image_shape = tuple(self.metadata["image_shape"])
        self.class_names = tuple(self.metadata["class_names"])
        self._logits = jax.jit(self.exported.call)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, num_classes) float32 logits of N images, uint8 or float pixel values 0..255."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"images of shape {images.shape}: expected (N, "
                             f"{', '.join(map(str, self.image_shape))}) at the exported input "
                             f"size (crop style {self.metadata['eval_crop']!r})")
        if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
            raise ValueError(f"images of dtype {images.dtype}: expected uint8 or float pixel "
                             "values 0..255")
        return np.asarray(self._logits(images.astype(np.float32)))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))


def load(path: str) -> ServedClassifier:
    return ServedClassifier(path)


def metadata_of(path: str) -> dict[str, Any]:
    return read(path)[0]
