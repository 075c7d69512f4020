"""The smallest finished run the reliability tests share, and their assertions about one-line
errors: a ShaResNet-8 on the digits at 8x8 (`trained`, once per session and conftest), a private
copy of it (`workdir`), and helpers that run the command line or the trainer and check that a
failure is one `error:` line without a traceback. Exposed as fixtures by tests/training/conftest.py
and tests/cli/conftest.py."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import ml_collections
import pytest

from sharesnet_jax import cli, train
from tests.helpers import ROOT, tiny_config


# The smallest run: ShaResNet-8 on the digits at 8x8, 4 steps, checkpoints at steps 2 and 4.
SMALL = dict(model="cifar_sharesnet8", image_size=8, num_train_steps=4, checkpoint_every_steps=2,
             log_every_steps=2, eval_every_steps=4)
SMALL_CLI = [f"--config.{k}={v}" for k, v in SMALL.items()]


def small(data_dir, **fields) -> ml_collections.ConfigDict:
    return tiny_config(data_dir=data_dir, **{**SMALL, **fields})


@pytest.fixture(scope="session")
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


def _chattr(flag: str, path) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", flag, str(path)], capture_output=True).returncode == 0


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


def _assert_one_line(result, status: int, pattern: str, count: int = 1) -> list[str]:
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == count and all(re.search(pattern, line) for line in lines), \
        result.stderr[-3000:]
    return lines


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
