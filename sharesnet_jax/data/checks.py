"""Host-side checks of what the pipelines yield, cheap enough for every batch: labels inside
[0, num_classes), and unreadable dataset files (truncated TFRecords) turned into one line that
says to re-prepare the dataset instead of a TensorFlow traceback."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import tensorflow as tf

from sharesnet_jax.data.info import DatasetInfo
from sharesnet_jax.errors import UserError, first_line


@contextlib.contextmanager
def readable_files(name: str, data_dir: str | None):
    """Any TensorFlow read error inside becomes a UserError naming the dataset."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.UnknownError) as err:
        message = first_line(err)
        raise UserError(f"the files of dataset {name!r} (data_dir {data_dir or 'default'}) cannot "
                        f"be read ({type(err).__name__}: {message}): they are truncated or "
                        "corrupt; delete its prepared folder and prepare it again") from None


def checked_batches(batches: Iterator[dict], info: DatasetInfo, data_dir: str | None,
                    first_step: int = 0) -> Iterator[dict]:
    """`batches` with every label checked against the dataset's classes."""
    step = first_step
    while True:
        with readable_files(info.name, data_dir):
            try:
                batch = next(batches)
            except StopIteration:
                return
        labels = np.asarray(batch["label"])
        step += 1
        if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
            bad = labels[(labels < 0) | (labels >= info.num_classes)][0]
            raise UserError(f"dataset {info.name!r} yields label {int(bad)} (batch {step}), "
                            f"outside [0, {info.num_classes}) of its {info.num_classes} classes: "
                            "fix the labels or the dataset's num_classes")
        yield batch
