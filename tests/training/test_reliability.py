"""Issue 14: what a run does when its input, its workdir or its disk misbehave. Every case is one
`error:` line (exit 2 on the command line, a UserError in Python) with no traceback, reached
before expensive work where possible, and nothing already saved is lost or moved."""

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from sharesnet_jax import predict, train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.checkpoints import (
    CheckpointWriteError, Checkpoints, read_checkpoint, write_failure,
)
from sharesnet_jax.training.trainer import TrainingDiverged
from sharesnet_jax.training.workdir_lock import WorkdirLock
from tests.helpers import ROOT, tiny_config

# The smallest run: ShaResNet-8 on the digits at 8x8, 4 steps, checkpoints at steps 2 and 4.
SMALL = dict(model="cifar_sharesnet8", image_size=8, num_train_steps=4, checkpoint_every_steps=2,
             log_every_steps=2, eval_every_steps=4)
SMALL_CLI = [f"--config.{k}={v}" for k, v in SMALL.items()]


def small(data_dir, **fields) -> ml_collections.ConfigDict:
    return tiny_config(data_dir=data_dir, **{**SMALL, **fields})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished small run: (workdir, its results)."""
    workdir = tmp_path_factory.mktemp("trained")
    return workdir, train.train_and_evaluate(small(data_dir), str(workdir))


@pytest.fixture
def workdir(trained, tmp_path):
    """A private copy of the finished run."""
    copy = tmp_path / "work"
    shutil.copytree(trained[0], copy)
    return copy


def _fingerprint_of_files(directory) -> str:
    """sha256 over every file name and content under `directory`: equal means untouched."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _cli(args, timeout=180, module="sharesnet_jax.main"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


def _assert_cli_error(result, pattern: str) -> None:
    import re

    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("Traceback") == 0, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(pattern, last), result.stderr[-3000:]


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
# Resuming: a readable checkpoint of another config refuses, in one line, and moves nothing.

REFUSED_CHANGES = [
    (dict(optimizer="adamw"), r"the checkpoint in \S+ was written with another config "
                              r"\(optimizer='sgd' there, 'adamw' now\): rerun with"),
    (dict(share="all"), r"has no entry \S+: it was written by a different model or config; .*"
                        r"\(share=None there, 'all' now\)"),
    (dict(batch_size=16, seed=1, dtype="bfloat16", learning_rate=0.1),
     r"\(batch_size=32 there, 16 now; dtype='float32' there, 'bfloat16' now; learning_rate=0.05 "
     r"there, 0.1 now; seed=0 there, 1 now\)"),
    (dict(num_train_steps=2), r"holds step 4, past this run's 2 steps"),
]


@pytest.mark.parametrize("fields,message", REFUSED_CHANGES, ids=lambda v: str(v)[:40])
def test_resume_with_another_config_refuses_and_moves_nothing(workdir, data_dir, fields, message):
    before = _fingerprint_of_files(workdir / "checkpoints")
    with pytest.raises(UserError, match=message) as error:
        train.train_and_evaluate(small(data_dir, **fields), str(workdir))
    _one_line(error)
    assert _fingerprint_of_files(workdir / "checkpoints") == before
    assert not os.path.exists(f"{workdir}/checkpoints.skipped")


def test_resume_with_bookkeeping_changes_keeps_the_run(workdir, data_dir, trained):
    # What may change: logging, evaluation and checkpoint frequency, keep_checkpoints.
    results = train.train_and_evaluate(
        small(data_dir, log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1,
              keep_checkpoints=5), str(workdir))
    assert results["step"] == 4
    assert results["params_fingerprint"] == trained[1]["params_fingerprint"]
    assert not os.path.exists(f"{workdir}/checkpoints.skipped")


# --------------------------------------------------------------------------------------------
# The workdir lock.

def test_second_run_on_a_locked_workdir_names_the_holder(workdir, data_dir):
    before = _fingerprint_of_files(workdir / "checkpoints")
    with WorkdirLock(str(workdir)):
        started = time.time()
        with pytest.raises(UserError, match=rf"workdir \S+ is in use by another run \(pid "
                                            rf"{os.getpid()} on host \S+,") as error:
            train.train_and_evaluate(small(data_dir), str(workdir))
        _one_line(error)
        assert time.time() - started < 10
    assert _fingerprint_of_files(workdir / "checkpoints") == before


def test_stale_lock_of_a_dead_run_does_not_block(workdir, data_dir, trained):
    # A lock file whose holder died: the kernel released its flock with the process.
    (workdir / ".lock").write_text("pid 999999 on host gone, since long ago\n")
    results = train.train_and_evaluate(small(data_dir), str(workdir))
    assert results["params_fingerprint"] == trained[1]["params_fingerprint"]


def test_processes_of_one_run_lock_files_of_their_own(tmp_path):
    with WorkdirLock(str(tmp_path), 0), WorkdirLock(str(tmp_path), 1):
        with pytest.raises(UserError, match="in use by another run"):
            with WorkdirLock(str(tmp_path), 1):
                pass
    with WorkdirLock(str(tmp_path), 0):  # released on exit
        pass


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


def test_every_step_skipped_fails_instead_of_writing_results(tmp_path, data_dir):
    # A finite learning rate that overflows float32 once scaled to the batch (32x): every
    # update is non-finite and skipped, so the model never trains.
    config = small(data_dir, learning_rate=1e38, learning_rate_batch_size=1,
                   skip_nonfinite=True)
    with pytest.raises(TrainingDiverged, match=r"every one of the 4 steps of this run had a "
                                               r"non-finite loss or update and was skipped") as e:
        train.train_and_evaluate(config, str(tmp_path))
    _one_line(e)
    assert not (tmp_path / "results.json").exists()
    assert "4" not in os.listdir(tmp_path / "checkpoints")


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
# Checkpoint writes that fail.

def test_checkpoint_write_failure_is_one_line(tmp_path, monkeypatch):
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    full = OSError(errno.ENOSPC, "No space left on device")

    def failing(*args, **kwargs):
        raise RuntimeError("save failed") from full

    monkeypatch.setattr(checkpoints._manager, "save", failing)
    with pytest.raises(CheckpointWriteError, match=r"cannot write the checkpoint of step 6 to "
                                                   r"\S+ \(disk full") as error:
        checkpoints.save(6, {"x": np.zeros(2)}, {})
    _one_line(error)
    refused = write_failure("/d", 2, PermissionError(errno.EPERM, "Operation not permitted", "/d/2"))
    assert "(Operation not permitted: /d/2)" in str(refused) and "resume" in str(refused)


def _chattr(flag: str, path) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_immutable_checkpoint_directory_exits_in_bounded_time(tmp_path, data_dir, trained):
    # Before: the error was printed, then interpreter shutdown waited forever on Orbax's threads.
    checkpoints = tmp_path / "work" / "checkpoints"
    checkpoints.mkdir(parents=True)
    if not _chattr("+i", checkpoints):
        pytest.skip("needs chattr +i (root on ext4/xfs)")
    try:
        probe = checkpoints / "probe"
        try:
            probe.mkdir()
            pytest.skip("chattr +i did not make the directory immutable here")
        except PermissionError:
            pass
        started = time.time()
        result = _cli(["--config=tests/tiny_config.py", f"--workdir={tmp_path / 'work'}",
                       *SMALL_CLI, f"--config.data_dir={data_dir}", "--config.num_train_steps=2"],
                      timeout=150)
        assert time.time() - started < 150
        _assert_cli_error(result, r"cannot write the checkpoint of step 2 to \S+checkpoints "
                                  r"\(Operation not permitted")
    finally:
        _chattr("-i", checkpoints)


def test_full_disk_is_one_line_saying_so(tmp_path, data_dir, trained):
    # Before: several tracebacks of Orbax's threads and no line saying the disk was full.
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("needs permission to mount a small tmpfs")
    try:
        result = _cli(["--config=tests/tiny_config.py", f"--workdir={disk / 'work'}", *SMALL_CLI,
                       f"--config.data_dir={data_dir}", "--config.num_train_steps=2"], timeout=150)
        _assert_cli_error(result, r"cannot write the checkpoint of step 2 to \S+ \(disk full")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------------------------------------------------
# Warm starts and torch files.

def _truncate_state(step_dir) -> None:
    for root, _, files in os.walk(step_dir / "state"):
        for name in files:
            open(os.path.join(root, name), "w").close()


def test_init_from_a_workdir_with_a_truncated_newest_checkpoint_uses_the_previous(workdir, caplog):
    _truncate_state(workdir / "checkpoints" / "4")
    record, variables = read_checkpoint(str(workdir))
    assert record["config"]["model"] == "cifar_sharesnet8"
    assert "Passed over unreadable checkpoint(s)" in caplog.text and "/4 (" in caplog.text
    _truncate_state(workdir / "checkpoints" / "2")
    with pytest.raises(UserError, match=r"cannot read the checkpoint \S+/4 .* nor 1 older") as e:
        read_checkpoint(str(workdir))
    _one_line(e)


def _resnet18_state_dict() -> dict:
    from sharesnet_jax.interop.torchvision import to_torchvision
    from sharesnet_jax.models import create_model
    from sharesnet_jax.models.stats import abstract_variables

    shapes = abstract_variables(create_model("resnet18", num_classes=10))
    return to_torchvision(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), "resnet18")


@pytest.mark.parametrize("value,message", [
    ("abc", r"entry 'layer1.0.conv1.weight' holds str of dtype <U3, not a tensor of numbers"),
    ([[1, 2], [3]], r"entry 'layer1.0.conv1.weight' is not a tensor or array \(list"),
    (None, r"entry 'layer1.0.conv1.weight' holds NoneType of dtype object"),
    (np.zeros((64, 64, 3, 3), bool), r"holds ndarray of dtype bool, not a tensor of numbers"),
])
def test_from_torchvision_rejects_values_of_the_wrong_kind(value, message):
    from sharesnet_jax.interop.torchvision import from_torchvision

    state_dict = _resnet18_state_dict()
    state_dict["layer1.0.conv1.weight"] = value
    with pytest.raises(ValueError, match=message) as error:
        from_torchvision(state_dict, "resnet18")
    _one_line(error)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    from sharesnet_jax.interop.torchvision import from_torchvision

    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match=r"needs torch, which is not installed: pip install -e "
                                         r"\"\.\[torch\]\""):
        from_torchvision(str(path), "resnet18")


@pytest.mark.parametrize("content", [b"", b"certainly not a zip or pickle", b"PK\x03\x04trunc"])
def test_truncated_or_foreign_pth_is_one_line(tmp_path, content):
    pytest.importorskip("torch")
    from sharesnet_jax.models import create_model
    from sharesnet_jax.training.warm_start import source_variables

    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"init_from=.*resnet18.pth.* is not a readable torch "
                                        r"state dict") as error:
        source_variables(str(path), "resnet18", create_model("resnet18", num_classes=10))
    _one_line(error)


# --------------------------------------------------------------------------------------------
# Prediction.

def test_predict_loads_a_run_trained_with_scan(tmp_path, data_dir):
    workdir = tmp_path / "scan"
    # ShaResNet-14: two blocks per stage, so the scanned layout differs from the loop's.
    train.train_and_evaluate(small(data_dir, model="cifar_sharesnet14", stage_impl="scan",
                                   num_train_steps=1, eval_every_steps=1), str(workdir))
    predictor = predict.load(str(workdir))
    probabilities = predictor([np.zeros((20, 20, 3), np.uint8)])
    assert probabilities.shape == (1, 10) and np.isclose(probabilities.sum(), 1, atol=1e-5)


def test_predict_scales_16_bit_and_float_images(tmp_path):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    eight = np.round(ramp * 255).astype(np.uint8)
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tiff")
    for name in ("g16.png", "f.tiff"):
        image = predict.read_image(str(tmp_path / name))
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert np.abs(image[..., 0].astype(int) - eight).max() <= 1, name
    Image.fromarray((ramp * 300).astype(np.float32)).save(tmp_path / "big.tiff")
    with pytest.raises(ValueError, match=r"float image .* values outside \[0, 1\]"):
        predict.read_image(str(tmp_path / "big.tiff"))
    # Within 0..255 but beyond 1: not a [0, 1] image either (x255 would saturate it).
    Image.fromarray((ramp * 200).astype(np.float32)).save(tmp_path / "mid.tiff")
    with pytest.raises(ValueError, match=r"float image .* values outside \[0, 1\]"):
        predict.read_image(str(tmp_path / "mid.tiff"))


@pytest.mark.parametrize("top", ["0", "-3"])
def test_predict_top_must_be_positive(trained, tmp_path, capsys, top):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert predict.main(["--workdir", str(trained[0]), f"--top={top}", str(image)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --top={top} must be at least 1"


# --------------------------------------------------------------------------------------------
# The command line: config files, cluster flags, signals during set-up.

CLI_CASES = [
    ("raises", "def get_config():\n    raise RuntimeError('boom in get_config')\n",
     [], r"RuntimeError: boom in get_config"),
    ("imports", "import no_such_module_xyz\n\ndef get_config():\n    return None\n",
     [], r"No module named 'no_such_module_xyz'"),
    ("tuple", None, ["--config.lr_decay_epochs=(a,2)"],
     r"lr_decay_epochs=\('\(a,2\)',\) holds '\(a,2\)': every element must be a number"),
    ("coordinator", None, ["--coordinator_address=nohostport", "--num_processes=2",
                           "--process_id=0"], r"--coordinator_address='nohostport' is not "
                                              r"HOST:PORT"),
]


@pytest.mark.parametrize("name,config_text,flags,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_errors_are_one_line(tmp_path, name, config_text, flags, message):
    config = "tests/tiny_config.py"
    if config_text is not None:
        config = str(tmp_path / f"{name}.py")
        with open(config, "w") as f:
            f.write(config_text)
    result = _cli([f"--config={config}", f"--workdir={tmp_path / 'work'}", *flags], timeout=120)
    _assert_cli_error(result, message)


def test_sigterm_during_set_up_exits_zero_with_a_line(tmp_path, data_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "sharesnet_jax.main", "--config=tests/tiny_config.py",
         f"--workdir={tmp_path / 'work'}", f"--config.data_dir={data_dir}", *SMALL_CLI],
        cwd=str(ROOT), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Process 0 of 1" in line:  # main has started; the trainer has not
            process.send_signal(signal.SIGTERM)
    text = "".join(lines)
    assert process.wait(timeout=120) == 0, text[-3000:]
    assert "Stopped by a signal during set-up, before step 1" in text, text[-3000:]
    assert "Traceback" not in text
    assert not os.path.exists(tmp_path / "work" / "results.json")
