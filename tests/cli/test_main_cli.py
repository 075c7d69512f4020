"""sharesnet_jax.main's command line: config files that raise or fail to import, bad flags and
cluster flags are one `error:` line (exit 2); SIGTERM during set-up exits 0 with a line."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from tests.small_run import SMALL_CLI, _assert_cli_error, _assert_one_line, _cli


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
