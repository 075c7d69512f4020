"""The record stored beside each checkpoint: the keys written, the records of older versions
read with the schema's defaults, malformed ones refused in one line naming the file."""

import dataclasses

import pytest

from sharesnet_jax.data.info import DatasetInfo
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.config import base_config, remat_policy
from sharesnet_jax.training.run_record import RunRecord
from sharesnet_jax.training.run_setup import build_model
from tests.helpers import ADDED_SINCE_THE_FIRST_RECORDS, tiny_config

WHERE = "/runs/a/checkpoints/8/record/metadata"
DIGITS = DatasetInfo(name="digits", num_classes=10, image_shape=(32, 32, 3),
                     num_train_examples=1497, num_eval_examples=300, mean=(1.5, 2.0, 2.5),
                     std=(3.0, 3.5, 4.0), augment="cifar", class_names=tuple("0123456789"))

# Written by hand: the first version's record (28 Nov 2026): no devices, a config of then.
FIRST_VERSION = {
    "config": {"model": "cifar_sharesnet8", "dataset": "digits", "data_dir": None,
               "batch_size": 32, "eval_batch_size": 100, "learning_rate": 0.1,
               "momentum": 0.9, "weight_decay": 1e-4, "num_epochs": 1, "num_train_steps": 8,
               "seed": 0, "share": None, "dtype": "float32", "remat": True,
               "log_every_steps": 2, "checkpoint_every_steps": 4},
    "num_classes": 10, "augment": "cifar", "image_shape": [32, 32, 3],
    "mean": [1.5, 2.0, 2.5], "std": [3.0, 3.5, 4.0], "class_names": list("0123456789"),
}


def test_the_stored_form_keeps_the_keys_every_version_wrote():
    config = tiny_config()
    stored = RunRecord.of_run(config, DIGITS, num_devices=8, num_processes=2).to_json()
    assert stored == {"config": config.to_dict(), "num_classes": 10, "augment": "cifar",
                      "image_shape": [32, 32, 3], "mean": [1.5, 2.0, 2.5],
                      "std": [3.0, 3.5, 4.0], "class_names": list("0123456789"),
                      "num_devices": 8, "num_processes": 2}
    assert list(stored) == ["config", "num_classes", "augment", "image_shape", "mean", "std",
                            "class_names", "num_devices", "num_processes"]
    read = RunRecord.from_json(stored, WHERE, checkpoint="/runs/a/checkpoints/8")
    assert read.to_json() == stored and read.checkpoint == "/runs/a/checkpoints/8"
    assert (read.image_shape, read.class_names[3]) == ((32, 32, 3), "3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.num_classes = 3
    with pytest.raises(TypeError):
        read.config["model"] = "cifar_resnet20"


def test_a_record_of_the_first_version_reads_with_the_schema_defaults():
    record = RunRecord.from_json(FIRST_VERSION, WHERE)
    defaults = base_config().to_dict()
    assert set(ADDED_SINCE_THE_FIRST_RECORDS).isdisjoint(FIRST_VERSION["config"])
    for field in ADDED_SINCE_THE_FIRST_RECORDS:
        assert record.config[field] == defaults[field], field
    assert record.config["batch_size"] == 32 and record.config["remat"] is True
    assert (record.num_devices, record.num_processes) == (None, None)
    # The boolean of then still means recomputing whole blocks.
    assert remat_policy(record.config) == "full"
    assert build_model(record.config, record.num_classes).remat_policy == "full"


def _without(key):
    return {k: v for k, v in FIRST_VERSION.items() if k != key}


@pytest.mark.parametrize("stored,problem", [
    ([1, 2], r"is not a run record: it holds list where a JSON object was written"),
    (None, r"is not a run record: it holds NoneType"),
    (_without("class_names"), r"is not a complete run record: it lacks class_names;"),
    ({"config": {}}, r"is not a complete run record: it lacks num_classes, augment, "
                     r"image_shape, mean, std, class_names;"),
    ({**FIRST_VERSION, "config": "cifar_sharesnet8"},
     r"holds config='cifar_sharesnet8', expected an object of config fields"),
    ({**FIRST_VERSION, "image_shape": [32, 32]},
     r"holds image_shape=\[32, 32\], expected 3 positive integers \(H, W, C\)"),
    ({**FIRST_VERSION, "num_classes": "10"}, r"holds num_classes='10', expected a positive"),
    ({**FIRST_VERSION, "mean": [1.5, "2", 2.5]},
     r"holds mean=\[1.5, '2', 2.5\], expected a list"),
    ({**FIRST_VERSION, "num_devices": True}, r"holds num_devices=True, expected an integer"),
])
def test_a_malformed_record_is_one_line_naming_its_file(stored, problem):
    with pytest.raises(UserError, match=f"^{WHERE} {problem}") as error:
        RunRecord.from_json(stored, WHERE)
    assert "\n" not in str(error.value)
    assert str(error.value).endswith("restore the file or move the checkpoint away")
