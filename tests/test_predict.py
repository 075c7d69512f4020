"""Prediction from a trained workdir: the Python API and the command line."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sharesnet_jax import predict, train
from sharesnet_jax.data import digits, pipeline, sources
from sharesnet_jax.errors import UserError
from tests.helpers import ROOT, as_first_records, rewrite_records, tiny_config



@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("trained")
    results = train.train_and_evaluate(
        tiny_config(data_dir=data_dir, num_train_steps=60,
                    learning_rate=0.1, checkpoint_every_steps=60), str(workdir))
    return workdir, results


def test_predictor_maps_images_of_any_size_to_probabilities(trained):
    workdir, results = trained
    predictor = predict.load(str(workdir))
    images, labels = digits.load_digit_splits()["test"]
    probabilities = predictor(images)
    assert probabilities.shape == (300, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    # The same 300 test images the run evaluated: the same accuracy, to one image.
    accuracy = np.mean(probabilities.argmax(-1) == labels)
    assert abs(accuracy - results["eval_accuracy"]) <= 1 / 300
    bigger = np.asarray(Image.fromarray(images[0]).resize((50, 41)))
    assert predictor([bigger, images[1]]).shape == (2, 10)
    assert predictor.top_k(probabilities[0], 3)[0][0] in predictor.class_names
    with pytest.raises(ValueError, match=r"expected uint8 \(H, W, 3\)"):
        predictor([np.zeros((32, 32, 4), np.uint8)])


def test_prediction_sees_what_evaluation_saw(trained, data_dir):
    """ImageNet style (shorter side to 256/224 of the crop, bicubic, centre crop): predict's
    preprocessing (eager) equals the evaluation pipeline's (tf.data graph) within a grey level."""
    workdir, _ = trained
    predictor = predict.load(str(workdir))
    predictor.augment, predictor.image_shape = "imagenet", (24, 24, 3)
    source = sources.open_source("digits", data_dir)
    info = pipeline.load_info(source, augment="imagenet", image_size=24)
    batch = next(pipeline.eval_batches(source, info, local_batch_size=16))
    images, _ = digits.load_digit_splits()["test"]
    for image, expected in zip(images[:16], batch["image"]):
        got = predictor.preprocess(image)
        assert got.shape == expected.shape == (24, 24, 3)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_command_line_prints_top5_and_one_line_per_bad_file(trained, tmp_path):
    workdir, _ = trained
    images, _ = digits.load_digit_splits()["test"]
    good = [tmp_path / "a.png", tmp_path / "b.jpg"]
    Image.fromarray(images[0]).save(good[0])
    Image.fromarray(images[1]).resize((64, 64)).convert("L").save(good[1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = subprocess.run(
        [sys.executable, "-m", "sharesnet_jax.predict", f"--workdir={workdir}", str(good[0]),
         str(broken), str(good[1])], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(good[0]), str(good[1])]
    assert all(line.count(",") == 4 for line in lines)  # five classes each
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "cannot read image" in errors[0]


def test_a_workdir_of_the_first_version_predicts_as_it_did(trained, tmp_path):
    """Records written before the devices and the newer config fields were recorded: the
    schema's defaults fill them in, and the predictions are those of today's record."""
    workdir, _ = trained
    older = tmp_path / "older"
    shutil.copytree(workdir / "checkpoints", older / "checkpoints")
    as_first_records(older)
    images, _ = digits.load_digit_splits()["test"]
    np.testing.assert_array_equal(predict.load(str(older))(images[:8]),
                                  predict.load(str(workdir))(images[:8]))


def test_a_malformed_record_is_one_line_naming_its_file(trained, tmp_path):
    workdir, _ = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(workdir / "checkpoints", damaged / "checkpoints")
    record, = rewrite_records(damaged, lambda record: {k: v for k, v in record.items()
                                                     if k != "class_names"})
    with pytest.raises(UserError, match=f"^{record} is not a complete run record: it lacks "
                                        "class_names; restore the file") as error:
        predict.load(str(damaged))
    assert "\n" not in str(error.value)
