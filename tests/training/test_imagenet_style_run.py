"""One short ImageNet-style run (the embedded digits read with `augment='imagenet'` at 24x24),
checkpointing every step, and what it leaves on disk: the checkpoints `keep_checkpoints` keeps
(the directory listing), `results.json` with its fields and a fingerprint of the newest
checkpoint's parameters AND BatchNorm statistics, and predictions preprocessed as this run's
evaluation did (shorter side scaled to 27 = round(24 x 256/224), longer side truncated, centre
offsets rounded up: fb.resnet.torch's Scale + CenterCrop), for images of other sizes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from sharesnet_jax import predict, train
from sharesnet_jax.models import create_model
from sharesnet_jax.training.checkpoints import read_checkpoint
from tests.helpers import tiny_config

RESULT_FIELDS = {"step", "eval_accuracy", "eval_top5_accuracy", "eval_loss", "num_params",
                 "params_fingerprint", "steps_run", "wall_seconds"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("imagenet_style")
    config = tiny_config(data_dir=data_dir, augment="imagenet", image_size=24,
                         model="cifar_sharesnet8", num_train_steps=5, checkpoint_every_steps=1,
                         keep_checkpoints=2, log_every_steps=5)
    results = train.train_and_evaluate(config, str(workdir))
    return workdir, results


def test_keep_checkpoints_is_what_the_directory_holds(run):
    workdir, _ = run
    assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["4", "5"]


def test_results_fingerprint_covers_the_final_parameters_and_statistics(run):
    workdir, results = run
    on_disk = json.loads((workdir / "results.json").read_text())
    assert set(on_disk) >= RESULT_FIELDS and on_disk == results
    assert (results["step"], results["steps_run"]) == (5, 5)
    assert 0 <= results["eval_accuracy"] <= results["eval_top5_accuracy"] <= 1
    record, variables = read_checkpoint(str(workdir))
    leaves = jax.tree.leaves((variables["params"], variables["batch_stats"]))
    assert len(jax.tree.leaves(variables["batch_stats"])) > 0
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(np.ascontiguousarray(leaf).tobytes())
    assert results["params_fingerprint"] == digest.hexdigest()
    assert results["num_params"] == sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def _reference_view(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    size = 27
    new_h, new_w = ((size, math.floor(width * size / height)) if height <= width
                    else (math.floor(height * size / width), size))
    top, left = math.ceil((new_h - 24) / 2), math.ceil((new_w - 24) / 2)
    resized = tf.image.resize(image.astype(np.float32), (new_h, new_w), method="bicubic").numpy()
    return np.clip(np.round(resized[top:top + 24, left:left + 24]), 0, 255).astype(np.uint8)


def test_predict_preprocesses_an_imagenet_style_run_as_its_evaluation(run):
    workdir, _ = run
    predictor = predict.load(str(workdir))
    assert predictor.augment == "imagenet" and predictor.image_shape == (24, 24, 3)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in ((37, 53, 3), (53, 37, 3), (30, 30, 3), (25, 61, 3))]
    views = []
    for image in images:
        view = _reference_view(image)
        np.testing.assert_array_equal(predictor.preprocess(image), view)
        views.append(view)
    record, variables = read_checkpoint(str(workdir))
    model = create_model("cifar_sharesnet8", num_classes=10)
    normalised = (np.stack(views).astype(np.float32) - np.float32(record.mean)) / np.float32(
        record.std)
    logits = model.apply(variables, normalised, train=False)
    np.testing.assert_allclose(predictor(images), jax.nn.softmax(logits), rtol=1e-4, atol=1e-6)
