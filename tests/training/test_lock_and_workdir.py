"""One run per workdir (the lock, its holder, its own failures) and files the run writes never
following a link: the link's target is untouched, stale temporaries are removed."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.workdir_lock import WorkdirLock
from tests.small_run import (
    SMALL_CLI, _assert_one_line, _chattr, _cli, _fingerprint_of_files, _one_line, _refused, small,
)


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


VICTIM_TEXT = "another user's file: must survive\n"


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
# Writes that follow links: a link (or a non-regular file) where the run writes.

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


# --------------------------------------------------------------------------------------------
# The lock itself.

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
