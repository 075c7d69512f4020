"""Failures during a run: a checkpoint write that fails (read-only, immutable, full disk) is one line
in bounded time, a run whose every step was skipped writes no results, and init_from skips a
truncated newest checkpoint."""

import errno
import os
import subprocess
import time

import numpy as np
import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.checkpoints import (
    CheckpointWriteError, Checkpoints, read_checkpoint, write_failure,
)
from sharesnet_jax.training.trainer import TrainingDiverged
from tests.small_run import SMALL_CLI, _assert_cli_error, _chattr, _cli, _one_line, small


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
# Warm starts.

def _truncate_state(step_dir) -> None:
    for root, _, files in os.walk(step_dir / "state"):
        for name in files:
            open(os.path.join(root, name), "w").close()


def test_init_from_a_workdir_with_a_truncated_newest_checkpoint_uses_the_previous(workdir, caplog):
    _truncate_state(workdir / "checkpoints" / "4")
    record, variables = read_checkpoint(str(workdir))
    assert record.config["model"] == "cifar_sharesnet8"
    assert "Passed over unreadable checkpoint(s)" in caplog.text and "/4 (" in caplog.text
    _truncate_state(workdir / "checkpoints" / "2")
    with pytest.raises(UserError, match=r"cannot read the checkpoint \S+/4 .* nor 1 older") as e:
        read_checkpoint(str(workdir))
    _one_line(e)
