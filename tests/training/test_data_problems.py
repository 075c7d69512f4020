"""Data problems found before the first step, or in one line when the batch holding them is read:
labels outside the classes, truncated or missing dataset files, a data_dir that cannot be made;
an evaluation that fails checkpoints the steps trained first."""

import os
import re
import shutil
import threading
import time

import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from tests.small_run import _one_line, _refused, small


# --------------------------------------------------------------------------------------------
# What the data and the steps yield.

def test_labels_outside_the_classes_fail_in_one_line(tmp_path, data_dir, monkeypatch):
    from sharesnet_jax.data import pipeline

    original = pipeline.train_batches

    def shifted(*args, **kwargs):
        for batch in original(*args, **kwargs):
            yield {**batch, "label": batch["label"] + 7}  # digits: labels 7..16 of 10 classes

    monkeypatch.setattr(pipeline, "train_batches", shifted)
    with pytest.raises(UserError, match=r"dataset 'digits' yields label 1\d \(batch 1\), outside "
                                        r"\[0, 10\) of its 10 classes") as error:
        train.train_and_evaluate(small(data_dir), str(tmp_path / "work"))
    _one_line(error)
    assert not os.listdir(tmp_path / "work" / "checkpoints")


def test_truncated_dataset_files_say_to_prepare_again(tmp_path, data_dir, trained):
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    records = [os.path.join(root, name) for root, _, files in os.walk(copy) for name in files
               if "tfrecord" in name and "train" in name]
    assert records
    for path in records:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(UserError, match=r"the files of dataset 'digits' .* cannot be read .*"
                                        r"truncated or corrupt; .* prepare it again") as error:
        train.train_and_evaluate(small(str(copy)), str(tmp_path / "work"))
    _one_line(error)


def test_opened_dataset_is_reused_across_evaluations(data_dir, monkeypatch):
    """The run opens (and checks) its dataset once: training and every evaluation read the
    source that load_dataset_info opened."""
    from sharesnet_jax.data import sources
    from sharesnet_jax.training import run_setup, trainer

    opened = []
    real_open = sources.open_source
    monkeypatch.setattr(sources, "open_source",
                        lambda *args, **kwargs: opened.append(args) or real_open(*args, **kwargs))
    monkeypatch.setattr(trainer.sharding, "prefetch_to_mesh", lambda batches, mesh: batches)
    config = small(data_dir)
    info = run_setup.load_dataset_info(config)
    plan = run_setup.plan_steps(config, info)
    for _ in range(2):
        assert next(trainer.eval_batches(config, info, None, plan))["image"].shape[0] > 0
    assert next(trainer.train_batches(config, info, None, start_step=3))["image"].shape[0] > 0
    assert len(opened) == 1


# --------------------------------------------------------------------------------------------
# Data problems, found before the first step.

def _copy_of(data_dir, tmp_path):
    from sharesnet_jax.data import digits

    digits.ensure_digits_dataset(data_dir)  # the session's data_dir may not hold it yet
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    version = copy / "sharesnet_digits" / "1.0.0"
    return copy, version


def _fifos_released_after(paths, seconds: float) -> None:
    """Replaces `paths` by FIFOs. A run that reads one blocks forever (the bug this case guards
    against): after `seconds` a watchdog opens each for writing and closes it, so the reader
    sees an end of file and the case fails on its time and message instead of hanging."""
    for path in paths:
        os.remove(path)
        os.mkfifo(path)

    def release() -> None:
        time.sleep(seconds)
        for _ in range(100):
            for path in paths:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader blocked on it (yet), or the copy is gone
                    pass
            time.sleep(0.1)

    threading.Thread(target=release, daemon=True).start()


def _eval_records(version):
    return sorted(version.glob("*-test.tfrecord*"))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DATA_CASES = [
    ("eval split empty", lambda v: None, dict(eval_split="test[:0]"),
     r"the evaluation split of 'digits' \(eval_split='test\[:0\]'\) selects no examples"),
    ("eval split past its end", lambda v: None, dict(eval_split="test[100%:]"),
     r"selects no examples"),
    ("train split empty", lambda v: None, dict(train_split="train[:0]"),
     r"split 'train\[:0\]' of dataset 'digits'"),
    ("metadata not JSON", lambda v: (v / "dataset_info.json").write_text("{not json"), {},
     r"the metadata of dataset 'digits' under \S+sharesnet_digits cannot be read \(ParseError"),
    ("metadata another JSON", lambda v: (v / "dataset_info.json").write_text("[1, 2]"), {},
     r"the metadata of dataset 'digits' under \S+ cannot be read .* it is corrupt"),
    ("metadata empty", lambda v: (v / "dataset_info.json").write_text(""), {},
     r"the metadata of dataset 'digits' under \S+ cannot be read"),
    ("features not JSON", lambda v: (v / "features.json").write_text("{"), {},
     r"the metadata of dataset 'digits' under \S+ cannot be read \(JSONDecodeError"),
    ("eval file truncated", lambda v: [_truncate(p) for p in _eval_records(v)], {},
     r"the files of split 'test' of dataset 'digits' hold \d+ bytes, fewer than the \d+ TFDS "
     r"wrote .* truncated"),
    ("eval file missing", lambda v: [os.remove(p) for p in _eval_records(v)], {},
     r"the files of split 'test' of dataset 'digits' are not all readable: \S+test.tfrecord\S* "
     r"\(No such file or directory\)"),
    ("eval file a FIFO", lambda v: _fifos_released_after(_eval_records(v), seconds=40), {},
     r"\S+test.tfrecord\S* \(it is not a regular file\)"),
    ("sub-split of a truncated file", lambda v: [_truncate(p) for p in _eval_records(v)],
     dict(eval_split="test[:10]"), r"the files of split 'test' .* truncated"),
]


@pytest.mark.parametrize("name,damage,fields,message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_problems_are_one_line_before_the_first_step(tmp_path, data_dir, capsys, name,
                                                         damage, fields, message):
    copy, version = _copy_of(data_dir, tmp_path)
    damage(version)
    _refused(lambda: train.train_and_evaluate(small(str(copy), **fields), str(tmp_path / "work")),
             capsys, message)
    checkpoints = tmp_path / "work" / "checkpoints"
    assert not checkpoints.exists() or not os.listdir(checkpoints)


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_a_data_dir_that_cannot_be_created_names_it(tmp_path, capsys, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    data_dir = str(blocker / "tfds") if where == "under_a_file" else "/proc/no_tfds_here"
    _refused(lambda: train.train_and_evaluate(small(data_dir), str(tmp_path / "work")), capsys,
             rf"data_dir '{re.escape(data_dir)}' cannot take the digits dataset \((Not a "
             r"directory|No such file or directory): ")


def test_an_evaluation_that_fails_checkpoints_the_steps_first(tmp_path, data_dir, capsys,
                                                             monkeypatch):
    # Before: the failure at the first evaluation lost every step since the last checkpoint.
    from sharesnet_jax.errors import UserError
    from sharesnet_jax.training import trainer

    def unreadable(*args, **kwargs):
        raise UserError("the files of dataset 'digits' cannot be read (injected)")

    monkeypatch.setattr(trainer, "eval_batches", unreadable)
    work = tmp_path / "work"
    config = small(data_dir, checkpoint_every_steps=100, eval_every_steps=3)
    _refused(lambda: train.train_and_evaluate(config, str(work)), capsys,
             r"cannot be read \(injected\); the state of step 3 is checkpointed: fix it and rerun")
    assert sorted(os.listdir(work / "checkpoints")) == ["3"]
