"""Kill it anywhere and it resumes bit-identically; SIGTERM checkpoints; unreadable checkpoints
are skipped; a diverged run halts before checkpointing NaN; bad input is one clear line."""

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import ml_collections
import numpy as np
import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.trainer import TrainingDiverged
from tests.helpers import ROOT, as_first_records, rewrite_records, tiny_config

# A run small enough to restart many times: ResNet-14 (shared), 16 steps of 32 digits,
# checkpoints every 4 steps, evaluation every 6.
RUN_FIELDS = dict(num_train_steps=16, checkpoint_every_steps=4, eval_every_steps=6,
                  log_every_steps=2)
CLI_OVERRIDES = [f"--config.{k}={v}" for k, v in RUN_FIELDS.items()]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return workdir, train.train_and_evaluate(tiny_config(data_dir=data_dir, **RUN_FIELDS),
                                             str(workdir))


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return uninterrupted_run[1]


class Run:
    """`python -m sharesnet_jax.main` in a subprocess whose log lines can trigger a signal."""

    def __init__(self, workdir, data_dir, extra=()):
        command = [sys.executable, "-m", "sharesnet_jax.main", "--config=tests/tiny_config.py",
                   f"--workdir={workdir}", f"--config.data_dir={data_dir}", *CLI_OVERRIDES, *extra]
        root = str(ROOT)
        self.process = subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def signal_on(self, pattern: str | None, delay: float, sig=signal.SIGKILL) -> int:
        """Sends `sig` `delay` seconds after the first line containing `pattern` (or after the
        model is built, for None); returns the exit code."""
        trigger = pattern or "parameters"
        fired = threading.Event()
        for line in self.process.stderr:
            self.lines.append(line)
            if not fired.is_set() and trigger in line:
                fired.set()
                threading.Timer(delay, self._send, (sig,)).start()
        return self.process.wait(timeout=240)

    def _send(self, sig) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def text(self) -> str:
        return "".join(self.lines)


def _results(workdir) -> dict:
    return json.loads((workdir / "results.json").read_text())


def test_killed_anywhere_and_restarted_ends_bit_identical(tmp_path, data_dir, uninterrupted):
    workdir = tmp_path / "killed"
    rng = random.Random(1234)
    # Each interrupt names the log line it waits for and a random delay after it, so the kill
    # lands during a checkpoint save, during evaluation, or inside the training steps.
    interrupts = [
        ("Saving checkpoint", rng.uniform(0.0, 0.15)),
        ("Evaluating at step", rng.uniform(0.0, 0.3)),
        (None, rng.uniform(0.5, 2.0)),
        ("Saving checkpoint", 0.0),
        ("train_loss", rng.uniform(0.0, 0.5)),
    ]
    killed = 0
    for pattern, delay in interrupts:
        code = Run(workdir, data_dir).signal_on(pattern, delay)
        killed += code == -signal.SIGKILL
        if code == 0:
            break
    assert killed >= 4, "most interrupts must land before the run ends"
    newest = max(_committed_steps(workdir), default=0)
    final = Run(workdir, data_dir)
    assert final.signal_on("never appears", 0) == 0, final.text()[-3000:]
    # A restart from step 0 would end with the same fingerprint: count the steps it ran.
    assert _results(workdir)["steps_run"] == RUN_FIELDS["num_train_steps"] - newest
    assert _results(workdir)["params_fingerprint"] == uninterrupted["params_fingerprint"]
    assert _results(workdir)["eval_accuracy"] == uninterrupted["eval_accuracy"]


def test_sigterm_checkpoints_the_current_step_and_exits_zero(tmp_path, data_dir, uninterrupted):
    workdir = tmp_path / "preempted"
    run = Run(workdir, data_dir)
    assert run.signal_on("train_loss", 0.3, signal.SIGTERM) == 0, run.text()[-3000:]
    preempted = [line for line in run.lines if "Preempted: checkpoint at step" in line]
    assert preempted, run.text()[-3000:]
    step = int(preempted[0].split("checkpoint at step ")[1].split(" ")[0].rstrip(";"))
    assert str(step) in os.listdir(workdir / "checkpoints")
    assert not (workdir / "results.json").exists()
    resumed = Run(workdir, data_dir)
    assert resumed.signal_on("never appears", 0) == 0
    assert _results(workdir)["steps_run"] == RUN_FIELDS["num_train_steps"] - step
    assert _results(workdir)["params_fingerprint"] == uninterrupted["params_fingerprint"]


def test_unreadable_latest_checkpoint_is_skipped_with_a_warning(tmp_path, data_dir, uninterrupted,
                                                                caplog):
    caplog.set_level(logging.INFO)
    workdir = tmp_path / "corrupt"
    config = tiny_config(data_dir=data_dir, **{**RUN_FIELDS, "num_train_steps": 8})
    train.train_and_evaluate(config, str(workdir))
    checkpoints = workdir / "checkpoints"
    assert sorted(os.listdir(checkpoints), key=int) == ["4", "8"]
    for root, _, files in os.walk(checkpoints / "8" / "state"):  # truncate every data file
        for name in files:
            if "manifest" in name or name.startswith(("d", "ocdbt")) or "/d" in root:
                open(os.path.join(root, name), "w").close()
    (checkpoints / "12.orbax-checkpoint-tmp-1").mkdir()  # a save killed before its commit
    results = train.train_and_evaluate(tiny_config(data_dir=data_dir, **RUN_FIELDS), str(workdir))
    assert "Skipped unreadable checkpoint" in caplog.text and "/8 (" in caplog.text
    assert results["steps_run"] == RUN_FIELDS["num_train_steps"] - 4  # from the good one, 4
    assert any(name.startswith("8-") for name in os.listdir(f"{checkpoints}.skipped"))
    assert results["params_fingerprint"] == uninterrupted["params_fingerprint"]


def test_a_checkpoint_of_the_first_version_resumes_and_a_malformed_record_stops(
        tmp_path, data_dir, uninterrupted_run):
    """Records without the devices and the newer config fields resume (those runs had the
    schema's defaults); a record that is no longer one is a one-line error naming its file,
    and nothing is moved aside."""
    finished, results = uninterrupted_run
    older = tmp_path / "older"
    shutil.copytree(finished / "checkpoints", older / "checkpoints")
    as_first_records(older)
    config = tiny_config(data_dir=data_dir, **{**RUN_FIELDS, "num_train_steps": 18})
    resumed = train.train_and_evaluate(config, str(older))
    assert (resumed["step"], resumed["steps_run"]) == (18, 2)
    damaged = tmp_path / "damaged"
    shutil.copytree(finished / "checkpoints", damaged / "checkpoints")
    newest = rewrite_records(damaged, lambda record: {**record, "image_shape": [32, 32]})[-1]
    steps = sorted(os.listdir(damaged / "checkpoints"))
    with pytest.raises(UserError, match=f"^{newest} holds image_shape=\\[32, 32\\], expected 3 "
                                        "positive integers") as error:
        train.train_and_evaluate(config, str(damaged))
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(damaged / "checkpoints")) == steps


def test_nonfinite_loss_halts_before_any_checkpoint_of_it(tmp_path, data_dir):
    config = tiny_config(data_dir=data_dir, learning_rate=1e8, num_train_steps=8,
                         checkpoint_every_steps=1, log_every_steps=4)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or update at step \d+ "):
        train.train_and_evaluate(config, str(tmp_path))
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    import orbax.checkpoint as ocp

    for step in saved:
        state = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / str(step) / "state")
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(state["params"]))


def test_nonfinite_parameters_halt_the_run_and_the_last_checkpoint_precedes_them(
        tmp_path, data_dir, monkeypatch):
    """Steps 1 and 2 are sound; from step 3 on the learning rate is infinite, so the loss and
    gradients of step 3 are finite but its NEW PARAMETERS are not. Checkpoints every step, logs
    far apart: the trainer must check step 3's metrics before it would checkpoint step 3."""
    import jax.numpy as jnp

    from sharesnet_jax.training import optim

    schedule = optim.learning_rate_schedule

    def infinite_from_step_3(*args, **kwargs):
        sound = schedule(*args, **kwargs)
        return lambda count: jnp.where(count >= 2, jnp.inf, sound(count))

    monkeypatch.setattr(optim, "learning_rate_schedule", infinite_from_step_3)
    config = tiny_config(data_dir=data_dir, num_train_steps=6, checkpoint_every_steps=1,
                         log_every_steps=100, eval_every_steps=100)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or update at step 3 ") as error:
        train.train_and_evaluate(config, str(tmp_path))
    loss = float(str(error.value).split("(loss ")[1].split(",")[0])
    assert np.isfinite(loss)  # caught by the parameters, not by the loss
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 60  # saves are asynchronous: let step 2's commit land
    while "2" not in os.listdir(checkpoints) and time.monotonic() < deadline:
        time.sleep(0.1)
    saved = _committed_steps(tmp_path)
    assert saved == [1, 2], saved  # the last one on disk precedes the bad step
    import orbax.checkpoint as ocp

    for step in saved:
        state = ocp.StandardCheckpointer().restore(checkpoints / str(step) / "state")
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(state["params"]))
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(state["batch_stats"]))


def _committed_steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_skip_nonfinite_counts_and_keeps_training(tmp_path, data_dir, caplog):
    # A warm-up from 0 to a rate near float32's largest: step 1 (rate 0) is finite, every later
    # update overflows and is skipped; the run keeps its last finite state instead of halting.
    config = tiny_config(data_dir=data_dir, learning_rate=3e38, warmup_epochs=0.1,
                         num_train_steps=4, skip_nonfinite=True)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["step"] == 4 and np.isfinite(results["eval_loss"])
    assert "3 steps had a non-finite loss and were skipped" in caplog.text


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


BAD_INPUTS = [
    (dict(model="sharesnet05"), r"model='sharesnet05' is not one of .*did you mean 'sharesnet50'"),
    (dict(dataset="no_such_dataset"), r"no_such_dataset"),
    (dict(optimizer="adam_w"), r"optimizer='adam_w' is not one of 'sgd', 'adamw'"),
    (dict(schedule="cosinus"), r"schedule='cosinus' is not one of .*'cosine'"),
    (dict(share="alll"), r"share='alll' is not one of 'none', 'paper', 'all'"),
    (dict(dtype="float16"), r"dtype='float16' is not one of 'float32', 'bfloat16'"),
    (dict(batch_size=0), r"batch_size=0 must be a positive multiple of the 1 devices"),
    (dict(learning_rte=0.1), r"unknown config field 'learning_rte'; did you mean 'learning_rate'"),
    (dict(batch_size="32"), r"batch_size='32' should be of type int, not str"),
    (dict(image_size=2), r"image_size=2 is too small for cifar_sharesnet20"),
    (dict(dataset="cifar10"), r"Dataset 'cifar10' is not prepared in data_dir .*download"),
    (dict(checkpoint_every_steps=0), r"checkpoint_every_steps=0 must be at least 1"),
]


@pytest.mark.parametrize("fields,message", BAD_INPUTS, ids=lambda v: str(v)[:40])
def test_bad_input_is_one_line_error_before_any_work(tmp_path, fields, message):
    # Built from a plain dict, as Python users do: ConfigDict checks no types then.
    config = ml_collections.ConfigDict({**tiny_config(data_dir=str(tmp_path / "empty_tfds")).to_dict(),
                                        **fields})
    started = time.time()
    with pytest.raises(UserError, match=message) as error:
        train.train_and_evaluate(config, str(tmp_path / "work"))
    assert "\n" not in str(error.value)
    assert time.time() - started < 20


def test_batch_not_divisible_by_devices(monkeypatch, tmp_path):
    monkeypatch.setattr("sharesnet_jax.training.validation.jax.device_count", lambda: 8)
    with pytest.raises(UserError, match=r"batch_size=12 must be a positive multiple of the 8 "):
        train.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"workdir .*file/sub' cannot be written"):
        train.train_and_evaluate(tiny_config(), str(blocker / "sub"))


def test_checkpoint_of_another_model_names_the_first_differing_path(tmp_path, data_dir):
    train.train_and_evaluate(tiny_config(data_dir=data_dir, num_train_steps=2), str(tmp_path))
    with pytest.raises(UserError, match=r"checkpoint \S+/2 (holds \S+ with shape \(\d+,?\), this "
                                        r"model needs \(\d+,?\)|has no entry \S+): it was written "
                                        r"by a different model"):
        train.train_and_evaluate(tiny_config(data_dir=data_dir, num_train_steps=4,
                                             model="sharewrn16_4"), str(tmp_path))


@pytest.mark.parametrize("argument,message", [
    ("--config.batch_size=abc", "error: flag --config.batch_size=abc: invalid literal for int()"),
    ("--config.batch_sise=3", "error: unknown config field: 'batch_sise' Did you mean \"batch_size\""),
    ("--config.model=resnet5", "error: model='resnet5' is not one of"),
])
def test_command_line_errors_reach_the_user_as_one_line(tmp_path, argument, message):
    result = subprocess.run(
        [sys.executable, "-m", "sharesnet_jax.main", "--config=configs/default.py",
         f"--workdir={tmp_path}", argument],
        capture_output=True, text=True, timeout=120,
        cwd=str(ROOT))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
