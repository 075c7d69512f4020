"""Bad config values, types and paths: one `error:` line (a UserError in Python, exit 2 on the
command line) before any expensive work, every field of the schema typed and range-checked."""

import os
import re
import time

import ml_collections
import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.config import base_config
from tests.small_run import _assert_one_line, _cli, _one_line, _refused, small


# --------------------------------------------------------------------------------------------
# Bad values: one line before any expensive work (the dataset's size at most is read).

BAD_CONFIGS = [
    (dict(learning_rate=float("nan")), r"learning_rate=nan must be a finite number >= 0"),
    (dict(learning_rate=float("inf")), r"learning_rate=inf must be a finite number >= 0"),
    (dict(momentum=float("nan")), r"momentum=nan must be a finite number in \[0, 1\)"),
    (dict(weight_decay=float("inf")), r"weight_decay=inf must be a finite number >= 0"),
    (dict(label_smoothing=1.5), r"label_smoothing=1.5 must be a finite number in \[0, 1\)"),
    (dict(dropout_rate=1.0), r"dropout_rate=1.0 must be a finite number in \[0, 1\)"),
    (dict(warmup_epochs=-1.0), r"warmup_epochs=-1.0 must be a finite number >= 0"),
    (dict(shuffle_buffer=-5), r"shuffle_buffer=-5 must be positive \(1: no shuffling\), or 0"),
    (dict(lr_decay_epochs=("a", 2)), r"lr_decay_epochs=\('a', 2\) holds 'a': every element must "
                                     r"be a number"),
    (dict(batch_size=4096), r"batch_size=4096 is larger than the \d+ training examples of "
                            r"'digits'"),
    (dict(train_split="train[:10]"), r"batch_size=32 is larger than the 10 training examples .*"
                                     r"split 'train\[:10\]'"),
    (dict(num_train_steps=-1, num_epochs=0.001), r"the run trains 0 steps"),
]


@pytest.mark.parametrize("fields,message", BAD_CONFIGS, ids=lambda v: str(v)[:40])
def test_bad_value_is_one_line_before_any_work(tmp_path, data_dir, fields, message):
    config = ml_collections.ConfigDict({**small(data_dir).to_dict(), **fields})
    started = time.time()
    with pytest.raises(UserError, match=message) as error:
        train.train_and_evaluate(config, str(tmp_path / "work"))
    _one_line(error)
    assert time.time() - started < 30
    assert not os.path.exists(tmp_path / "work" / "checkpoints")


def test_data_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "tfds_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"data_dir='.*tfds_file' is a file, not a directory"):
        train.train_and_evaluate(small(str(blocker)), str(tmp_path / "work"))


def test_results_path_that_cannot_be_written_fails_at_start(tmp_path, data_dir):
    (tmp_path / "work" / "results.json").mkdir(parents=True)
    started = time.time()
    with pytest.raises(UserError, match=r"results.json cannot be written \(it is a directory\)"):
        train.train_and_evaluate(small(data_dir), str(tmp_path / "work"))
    assert time.time() - started < 10
    assert not os.path.exists(tmp_path / "work" / "checkpoints")


# --------------------------------------------------------------------------------------------
# Every field of the schema: None where it has no meaning, the wrong type, out of range.

# Out-of-range values of every field, written here (not derived from validation.py): a field
# added to the schema without an entry fails test_every_schema_field_has_cases. [] means any
# value of the field's type is meaningful (or is checked later, against the dataset).
OUT_OF_RANGE = {
    "augment": [("fancy", r"augment='fancy' is not one of")],
    "batch_size": [(0, r"batch_size=0 must be a positive multiple"),
                   (-32, r"batch_size=-32 must be a positive multiple")],
    "bn_group_size": [(-1, r"bn_group_size=-1 must divide"), (5, r"bn_group_size=5 must divide")],
    "checkpoint_every_steps": [(0, r"checkpoint_every_steps=0 must be at least 1")],
    "color_jitter": [(-0.1, r"color_jitter=-0.1 must be a finite number >= 0"),
                     (float("inf"), r"color_jitter=inf must be a finite")],
    "data_dir": [("/dev/null", r"data_dir='/dev/null' is a file, not a directory")],
    "dataset": [("", r"dataset='' must be a TFDS name")],
    "download": [],
    "dropout_rate": [(1.0, r"dropout_rate=1.0 must be a finite number in \[0, 1\)"),
                     (-0.5, r"dropout_rate=-0.5 must be")],
    "dtype": [("float16", r"dtype='float16' is not one of")],
    "eval_batch_size": [(0, r"eval_batch_size=0 must be a positive multiple")],
    "eval_every_epochs": [(0, r"eval_every_epochs=0 must be at least 1"),
                          (-1, r"eval_every_epochs=-1 must be at least 1")],
    "eval_every_steps": [(-1, r"eval_every_steps=-1 must be positive, or 0")],
    "eval_only": [],
    "eval_split": [("", r"eval_split='' is empty"), (" ", r"eval_split=' ' is empty")],
    "grad_reduce_dtype": [("bf16", r"grad_reduce_dtype='bf16' is not one of")],
    "image_size": [(2, r"image_size=2 is too small"), (-8, r"image_size=-8 is too small")],
    "init_from": [("/no/such/run", r"init_from='/no/such/run' does not exist")],
    "keep_checkpoints": [(0, r"keep_checkpoints=0 must be at least 1")],
    "label_smoothing": [(1.0, r"label_smoothing=1.0 must be"), (-0.1, r"label_smoothing=-0.1")],
    "learning_rate": [(-0.1, r"learning_rate=-0.1 must be a finite number >= 0")],
    "learning_rate_batch_size": [(0, r"learning_rate_batch_size=0 must be at least 1"),
                                 (-128, r"learning_rate_batch_size=-128 must be at least 1")],
    "log_every_steps": [(0, r"log_every_steps=0 must be at least 1")],
    "lr_decay_epochs": [((-1, 2), r"lr_decay_epochs=\(-1, 2\) holds -1: every element must be "
                                  r"a finite number of completed epochs >= 0"),
                        ((1, float("nan")), r"lr_decay_epochs=\(1, nan\) holds nan")],
    "lr_decay_factor": [(1.5, r"lr_decay_factor=1.5 must be a finite number in \(0, 1\]"),
                        (0.0, r"lr_decay_factor=0.0 must be"), (-0.2, r"lr_decay_factor=-0.2")],
    "manual_dir": [("/no/such/dir", r"manual_dir='/no/such/dir' does not exist")],
    "model": [("resnet9000", r"model='resnet9000' is not one of")],
    "momentum": [(1.0, r"momentum=1.0 must be"), (-0.1, r"momentum=-0.1 must be")],
    "nesterov": [],
    "num_classes": [(0, r"num_classes=0 must be at least 1"),
                    (-3, r"num_classes=-3 must be at least 1")],
    "num_epochs": [(float("inf"), r"num_epochs=inf must be a finite number >= 0"),
                   (-1.0, r"num_epochs=-1.0 must be a finite number >= 0")],
    "num_train_steps": [(0, r"num_train_steps=0 must be positive, or -1"),
                        (-2, r"num_train_steps=-2 must be positive, or -1")],
    "optimizer": [("sgdd", r"optimizer='sgdd' is not one of")],
    "pca_lighting": [(-1.0, r"pca_lighting=-1.0 must be"), (float("nan"), r"pca_lighting=nan")],
    "remat": [],
    "remat_policy": [("half", r"remat_policy='half' is not one of 'none', 'conv_outputs', 'full'")],
    "schedule": [("linear", r"schedule='linear' is not one of")],
    "seed": [(-1, r"seed=-1 must be an integer in \[0, 2147483647\]"),
             (2**31, r"seed=2147483648 must be an integer"),
             (2**64, r"seed=18446744073709551616 must be an integer")],
    "share": [("some", r"share='some' is not one of")],
    "shuffle_buffer": [(-1, r"shuffle_buffer=-1 must be positive")],
    "skip_nonfinite": [],
    "stage_impl": [("unrolled", r"stage_impl='unrolled' is not one of")],
    "train_split": [("", r"train_split='' is empty")],
    "warmup_epochs": [(-1.0, r"warmup_epochs=-1.0 must be")],
    "weight_decay": [(-1e-4, r"weight_decay=-0.0001 must be")],
}


# A value of another type for each declared type, and the name of that type in the line.
WRONG_TYPE = {str: (3, "int"), int: ("3", "str"), float: ("0.1", "str"), bool: (1, "int"),
              tuple: ("59", "str")}


def _schema_cases():
    reference = base_config()
    cases = []
    for field in reference.keys():
        declared = reference.get_ref(field).get_type()
        if reference[field] is not None:  # only a placeholder may be unset
            cases.append((field, None, rf"config field {field}=None has no meaning: give a "
                                       rf"{declared.__name__}"))
        wrong, name = WRONG_TYPE[declared]
        cases.append((field, wrong, rf"config field {field}={re.escape(repr(wrong))} should be "
                                    rf"of type {declared.__name__}, not {name}"))
        cases += [(field, value, message) for value, message in OUT_OF_RANGE.get(field, [])]
    return cases


def test_every_schema_field_has_cases():
    assert sorted(OUT_OF_RANGE) == sorted(base_config().keys())


@pytest.mark.parametrize("field,value,message", _schema_cases(),
                         ids=[f"{c[0]}={c[1]!r}"[:40] for c in _schema_cases()])
def test_every_field_is_typed_and_range_checked_before_any_work(tmp_path, data_dir, capsys,
                                                                field, value, message):
    # A short fallback length: a num_train_steps refusal that regressed trains 2 steps, not 200
    # epochs.
    fields = {"num_epochs": 0.05, field: value}
    if field == "num_epochs":
        fields["num_train_steps"] = -1
    config = ml_collections.ConfigDict({**small(data_dir).to_dict(), **fields})
    _refused(lambda: train.train_and_evaluate(config, str(tmp_path / "work")), capsys, message,
             seconds=10)
    assert not os.path.exists(tmp_path / "work")  # refused before the workdir is made


def test_a_none_in_a_config_file_is_one_line(tmp_path):
    # Before: the traceback of a comparison with None, after the dataset had loaded.
    config = tmp_path / "none_seed.py"
    config.write_text("from tests.helpers import tiny_config\n\ndef get_config():\n"
                      "    c = tiny_config()\n    c.seed = None\n    return c\n")
    result = _cli([f"--config={config}", f"--workdir={tmp_path / 'work'}"], timeout=120)
    _assert_one_line(result, 2, r"config field seed=None has no meaning: give a int")


def test_num_classes_that_contradicts_the_dataset_is_refused(tmp_path, data_dir, capsys):
    _refused(lambda: train.train_and_evaluate(small(data_dir, num_classes=7),
                                              str(tmp_path / "work")), capsys,
             r"num_classes=7 contradicts dataset 'digits', which has 10 classes")
    assert not os.path.exists(tmp_path / "work" / "checkpoints")


@pytest.mark.parametrize("root", ["/", "/tmp/../", "//"])
def test_the_filesystem_root_is_no_workdir(capsys, root):
    # Before: --workdir=/ trained, writing .lock, checkpoints/ and results.json into /. Checked
    # on `check_workdir` itself, so that a regression cannot train into / again.
    from sharesnet_jax.training import validation

    _refused(lambda: validation.check_workdir(root), capsys,
             rf"^error: workdir '{re.escape(root)}' is the root of the filesystem: give a "
             r"directory of the run's own")
