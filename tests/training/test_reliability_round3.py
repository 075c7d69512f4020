"""Issue 22, the third adversarial round: files the run writes never follow a link, every config
value is checked, data problems are found before the first step, the lock's own failures, and
predict on special inputs. Every case asserts the exit status, the one `error:` line and no
traceback, in bounded time; the write cases also that a link's target is untouched."""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from sharesnet_jax import cli, train
from sharesnet_jax.training.config import base_config
from sharesnet_jax.training.workdir_lock import WorkdirLock
from tests.training.test_reliability import (  # noqa: F401 - the fixtures are used by name
    SMALL_CLI, _chattr, _cli, small, trained, workdir,
)

VICTIM_TEXT = "another user's file: must survive\n"




def _status(run) -> tuple[int, str]:
    """What the command line would do: the trainer under `cli.one_line_errors` (the wrapper
    `main` uses), its exit status and stderr. The hooks `cli.fail` replaces are put back."""
    hooks = threading.excepthook, sys.unraisablehook
    try:
        status = cli.one_line_errors(lambda: (run(), 0)[1])()
    finally:
        threading.excepthook, sys.unraisablehook = hooks
    return status


def _refused(run, capsys, pattern: str, seconds: float = 30) -> str:
    capsys.readouterr()
    started = time.time()
    status = _status(run)
    err = capsys.readouterr().err
    assert time.time() - started < seconds
    assert status == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), err[-3000:]
    return lines[0]


def _victim(tmp_path):
    """Another user's file and directory, with what they hold now."""
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    victim_dir = tmp_path / "victim_dir"
    (victim_dir / "keep").mkdir(parents=True)
    (victim_dir / "keep" / "data").write_text(VICTIM_TEXT)
    return victim, victim_dir


def _assert_untouched(victim, victim_dir):
    assert victim.read_text() == VICTIM_TEXT
    assert sorted(os.listdir(victim_dir)) == ["keep"]
    assert os.listdir(victim_dir / "keep") == ["data"]
    assert (victim_dir / "keep" / "data").read_text() == VICTIM_TEXT


# --------------------------------------------------------------------------------------------
# 1. Writes that follow links: a link (or a non-regular file) where the run writes.

def _link(path, target):
    os.symlink(target, path)


LINK_CASES = [
    # (name, plant(workdir, victim, victim_dir), the line)
    ("lock->file", lambda w, v, d: _link(w / ".lock", v),
     r"\.lock is a symbolic link, not a file this run may write: remove it \(its target is "
     r"left alone\)"),
    ("lock->missing", lambda w, v, d: _link(w / ".lock", w.parent / "created_through_link"),
     r"\.lock is a symbolic link"),
    ("results->file", lambda w, v, d: _link(w / "results.json", v),
     r"results.json cannot be written \(it is a symbolic link\)"),
    ("results->missing", lambda w, v, d: _link(w / "results.json", w.parent / "created_through_link"),
     r"results.json cannot be written \(it is a symbolic link\)"),
    ("checkpoints->dir", lambda w, v, d: _link(w / "checkpoints", d),
     r"checkpoints is a symbolic link, not a directory this run may write into"),
    ("skipped->dir", lambda w, v, d: _link(w / "checkpoints.skipped", d),
     r"checkpoints.skipped is a symbolic link, not a directory"),
    ("step->dir", lambda w, v, d: (os.makedirs(w / "checkpoints"), _link(w / "checkpoints" / "2", d)),
     r"checkpoints/2 is a symbolic link, not a directory"),
    ("checkpoints is a file", lambda w, v, d: (w / "checkpoints").write_text("x"),
     r"checkpoints is a file, not a directory this run may write into"),
]


@pytest.mark.parametrize("name,plant,message", LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_a_link_where_the_run_writes_is_refused_and_its_target_untouched(
        tmp_path, data_dir, capsys, name, plant, message):
    work = tmp_path / "work"
    work.mkdir()
    victim, victim_dir = _victim(tmp_path)
    plant(work, victim, victim_dir)
    _refused(lambda: train.train_and_evaluate(small(data_dir), str(work)), capsys, message)
    _assert_untouched(victim, victim_dir)
    assert not os.path.lexists(tmp_path / "created_through_link")
    assert not os.path.exists(work / "checkpoints" / "2" / "state")


def test_stale_temporaries_are_removed_without_touching_their_targets(tmp_path, data_dir):
    # Before: results.json was written through `results.json.tmp`, a fixed name: a link
    # planted there had its target truncated and overwritten with the results.
    work = tmp_path / "work"
    work.mkdir()
    victim, victim_dir = _victim(tmp_path)
    _link(work / "results.json.tmp", victim)  # the old fixed name
    _link(work / ".results.json.k2j4x9.tmp", victim)  # a temporary of a killed run
    results = train.train_and_evaluate(small(data_dir), str(work))
    _assert_untouched(victim, victim_dir)
    assert json.loads((work / "results.json").read_text())["step"] == results["step"] == 4
    assert not os.path.islink(work / "results.json")
    assert sorted(n for n in os.listdir(work) if "tmp" in n) == []


def test_results_json_that_is_a_fifo_is_refused_at_once(tmp_path, data_dir):
    # Before: the start-up check opened it for appending, which blocks until a reader comes.
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "results.json")
    started = time.time()
    result = _cli(["--config=tests/tiny_config.py", f"--workdir={work}", *SMALL_CLI,
                   f"--config.data_dir={data_dir}"], timeout=120)
    assert time.time() - started < 120
    _assert_one_line(result, 2, r"results.json cannot be written \(it is a FIFO\)")


def _assert_one_line(result, status: int, pattern: str, count: int = 1) -> list[str]:
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == count and all(re.search(pattern, line) for line in lines), \
        result.stderr[-3000:]
    return lines


# --------------------------------------------------------------------------------------------
# 4. The lock itself.

def _root() -> bool:
    return os.geteuid() == 0


LOCK_CASES = [
    ("directory", lambda lock: lock.mkdir(), r"\.lock is a directory, not a file this run may "
                                             r"write"),
    ("fifo", lambda lock: os.mkfifo(lock), r"\.lock is a FIFO, not a file this run may write"),
    ("unreadable", lambda lock: (lock.write_text(""), os.chmod(lock, 0)),
     r"\.lock cannot be opened \(Permission denied\)"),
    ("immutable", lambda lock: (lock.write_text(""), _chattr("+i", lock) or pytest.skip(
        "needs chattr +i (root on ext4/xfs)")), r"\.lock cannot be opened \(Operation not "
                                                r"permitted\)"),
]


@pytest.mark.parametrize("name,plant,message", LOCK_CASES, ids=[c[0] for c in LOCK_CASES])
def test_a_lock_path_that_cannot_be_a_lock_is_one_line(tmp_path, data_dir, capsys, name, plant,
                                                      message):
    if name == "unreadable" and _root():
        pytest.skip("root opens a file of mode 000")
    work = tmp_path / "work"
    work.mkdir()
    try:
        plant(work / ".lock")
        _refused(lambda: train.train_and_evaluate(small(data_dir), str(work)), capsys, message)
    finally:
        _chattr("-i", work / ".lock")
    assert not os.path.exists(work / "checkpoints")


def test_a_refusal_never_names_a_dead_holder(tmp_path, data_dir, capsys):
    # The lock is held, but its file names a process of this host that no longer exists (as
    # when the holder has locked and not yet written its line over a dead run's).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    work = tmp_path / "work"
    work.mkdir()
    with WorkdirLock(str(work)) as lock:
        with open(lock.path, "w") as f:
            f.write(f"pid {dead.pid} on host {socket.gethostname()}, since long ago\n")
        line = _refused(lambda: train.train_and_evaluate(small(data_dir), str(work)), capsys,
                        rf"in use by another run \(a process other than pid {dead.pid}, which the "
                        r"lock file names but which is no longer running on this host")
    assert "since long ago" not in line


# --------------------------------------------------------------------------------------------
# 2. Every field of the schema: None where it has no meaning, the wrong type, out of range.

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


# --------------------------------------------------------------------------------------------
# 3. Data problems, found before the first step.

def _copy_of(data_dir, tmp_path):
    from sharesnet_jax.data import digits

    digits.ensure_digits_dataset(data_dir)  # the session's data_dir may not hold it yet
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    version = copy / "sharesnet_digits" / "1.0.0"
    return copy, version


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
    ("eval file a FIFO", lambda v: [(os.remove(p), os.mkfifo(p)) for p in _eval_records(v)], {},
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


# --------------------------------------------------------------------------------------------
# 5. predict on special inputs: one line for that input, the others still predicted.

def _png_header_only(path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming width x height, then one empty IDAT: a few dozen
    bytes on disk that decode to width * height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                + chunk(b"IEND", b""))


def test_predict_refuses_special_inputs_and_predicts_the_rest(trained, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    os.mkfifo(tmp_path / "fifo.png")
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 900 Mpx: PIL's own limit refuses
    _png_header_only(tmp_path / "big.png", 11000, 11000)  # 121 Mpx: between PIL's two limits
    (tmp_path / "a_directory.png").mkdir()
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    bad = ["fifo.png", "bomb.png", "big.png", "a_directory.png", "truncated.png", "missing.png"]
    started = time.time()
    result = _cli(["--workdir", str(trained[0]), str(good), *[str(tmp_path / n) for n in bad],
                   str(good)], module="sharesnet_jax.predict", timeout=120)
    assert time.time() - started < 120
    lines = _assert_one_line(result, 1, r"^error: \S+: cannot read image: ", count=len(bad))
    by_name = {os.path.basename(line.split(":")[1].strip()): line for line in lines}
    assert sorted(by_name) == sorted(bad)
    assert "it is a FIFO, not a regular file" in by_name["fifo.png"]
    assert "it is a directory, not a regular file" in by_name["a_directory.png"]
    assert "No such file or directory" in by_name["missing.png"]
    assert "11000x11000 pixels, more than the 100,000,000" in by_name["big.png"]
    assert re.search(r"DecompressionBomb|30000x30000", by_name["bomb.png"])
    predicted = [line for line in result.stdout.splitlines() if line.startswith(str(good))]
    assert len(predicted) == 2, result.stdout


def _edit_records(workdir, change) -> None:
    for path in (workdir / "checkpoints").glob("*/record/*"):
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue
            if isinstance(record, dict) and "config" in record:
                change(record)
                path.write_text(json.dumps(record))


def test_predict_on_a_workdir_whose_record_names_another_model(workdir, tmp_path):
    _edit_records(workdir, lambda record: record["config"].update(model="cifar_sharesnet14"))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = _cli(["--workdir", str(workdir), str(image)], module="sharesnet_jax.predict",
                  timeout=120)
    _assert_one_line(result, 2, r"the checkpoint in \S+ (has no entry|holds) \S+.* the "
                                r"cifar_sharesnet14 its record names|written by a different "
                                r"model")


# --------------------------------------------------------------------------------------------
# 6. Smaller ones.

def test_a_renamed_step_directory_is_refused(workdir, data_dir, capsys):
    os.rename(workdir / "checkpoints" / "4", workdir / "checkpoints" / "7")
    _refused(lambda: train.train_and_evaluate(small(data_dir, num_train_steps=8), str(workdir)),
             capsys, r"checkpoints/7 holds the state of step 4: the step directory was renamed; "
                     r"rename it back to 4")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "7"]


def test_resuming_on_another_device_count_says_so(workdir, data_dir, caplog):
    _edit_records(workdir, lambda record: record.update(num_devices=8, num_processes=2))
    results = train.train_and_evaluate(small(data_dir, num_train_steps=6), str(workdir))
    assert results["step"] == 6
    lines = [r.getMessage() for r in caplog.records if "bit-identical" in r.getMessage()]
    assert lines == ["Resuming a checkpoint written on 8 device(s) in 2 process(es) on 1 "
                     "device(s) in 1 process(es): training continues correctly, but the data "
                     "order and the numerics change, so the result will not be bit-identical to "
                     "an uninterrupted run"]


def test_resuming_on_the_same_device_count_says_nothing(workdir, data_dir, caplog):
    train.train_and_evaluate(small(data_dir, num_train_steps=6), str(workdir))
    assert not [r for r in caplog.records if "bit-identical" in r.getMessage()]


CLI_CASES = [
    ("extra positional", ["--config=tests/tiny_config.py", "extra", "more"],
     r"^error: unexpected argument\(s\) 'extra' 'more': every option is a flag"),
    ("config argument", ["--config=tests/tiny_config.py:surprise"],
     r"^error: flag --config=tests/tiny_config.py:surprise: Error whilst parsing config file: "
     r"TypeError: get_config\(\) takes 0 positional arguments but 1 was given$"),
]


@pytest.mark.parametrize("name,args,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_mistakes_are_one_line(tmp_path, name, args, message):
    if not any(a.startswith("--workdir") for a in args):
        args = [*args, f"--workdir={tmp_path / 'work'}"]
    started = time.time()
    result = _cli(args, timeout=120)
    assert time.time() - started < 120
    _assert_one_line(result, 2, message)
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr  # no usage text


@pytest.mark.parametrize("root", ["/", "/tmp/../", "//"])
def test_the_filesystem_root_is_no_workdir(capsys, root):
    # Before: --workdir=/ trained, writing .lock, checkpoints/ and results.json into /. Checked
    # on `check_workdir` itself, so that a regression cannot train into / again.
    from sharesnet_jax.training import validation

    _refused(lambda: validation.check_workdir(root), capsys,
             rf"^error: workdir '{re.escape(root)}' is the root of the filesystem: give a "
             r"directory of the run's own")


def test_planner_reads_petabyte_figures():
    from sharesnet_jax.preflight.hlo import parse_out_of_memory

    assert parse_out_of_memory("Ran out of memory in memory space hbm. Used 1.53P of 15.75G "
                               "hbm.") == (int(1.53 * 2**50), int(15.75 * 2**30))
    assert parse_out_of_memory("(2.5E) exceeds available HBM (16G)")[0] == int(2.5 * 2**60)


def test_results_write_is_safe_module_level(tmp_path):
    """safe_files.write_atomically never writes through a link at its path or temporaries."""
    from sharesnet_jax import safe_files
    from sharesnet_jax.errors import UserError

    victim, _ = _victim(tmp_path)
    target = tmp_path / "out.json"
    _link(target, victim)
    with pytest.raises(UserError, match=r"out.json is a symbolic link"):
        safe_files.write_atomically(str(target), "{}")
    os.remove(target)
    safe_files.write_atomically(str(target), "{}")
    assert target.read_text() == "{}" and victim.read_text() == VICTIM_TEXT
    assert os.stat(target).st_mode & 0o777 == 0o644  # readable like any file of the run
    assert os.listdir(tmp_path) and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

