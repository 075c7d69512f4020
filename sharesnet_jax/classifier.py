"""The evaluation-mode classifier of a trained run as one function of pixels, built once for
prediction (`predict`) and for serving export (`export`), so both compute the same logits."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax

from sharesnet_jax.models.stats import abstract_variables
from sharesnet_jax.training.checkpoints import check_same_shapes, read_checkpoint
from sharesnet_jax.training.run_record import RunRecord
from sharesnet_jax.training.run_setup import build_model
from sharesnet_jax.training.steps import normalize


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    record: RunRecord  # the checkpoint's record (config, classes, image shape, mean/std)
    step: int | None  # the step of the checkpoint read (None: a folder not named by its step)
    # (N, H, W, C) pixel values 0..255, uint8 or float -> (N, num_classes) float32 logits; the
    # run's per-channel normalisation is inside, its resize/crop to (H, W) is not.
    logits: Callable[[jax.Array], jax.Array]


def from_checkpoint(source: str) -> TrainedClassifier:
    """The newest readable checkpoint of a workdir (or its checkpoints/ or one step folder)."""
    record, variables = read_checkpoint(source)
    # read_checkpoint hands back loop-layout variables, whatever layout the run trained in.
    model = build_model({**record.config, "stage_impl": "loop"}, record.num_classes)
    # A record that names another model than the weights beside it (edited, or copied from
    # another run) is one line here, not a Flax trace at the first image.
    check_same_shapes(variables, abstract_variables(model, record.image_shape),
                      f"the checkpoint in {source}",
                      f"the {record.config['model']} its record names")
    mean, std = record.mean, record.std
    variables = jax.device_put(variables)

    def logits(images: jax.Array) -> jax.Array:
        return model.apply(variables, normalize(images, mean, std), train=False)

    name = os.path.basename(os.path.normpath(record.checkpoint))
    return TrainedClassifier(record, int(name) if name.isdigit() else None, logits)
