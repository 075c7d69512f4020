"""Several processes on localhost form one run: `python -m sharesnet_jax.main` started twice with
--coordinator_address/--num_processes/--process_id, two fake CPU devices each, trains like one
process on four devices, resumes after SIGKILL of both, stops both at one step on SIGTERM to one,
evaluates every example once, and a process that cannot join says so in one line. Every
subprocess has a deadline and is killed when its test ends, so nothing can hang CI."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.training import cluster
from tests.helpers import ROOT, tiny_config

DEADLINE_S = 240  # for any one launch; a healthy one takes well under a minute
# The smallest model on 8x8 images: each of the two processes compiles every step function itself.
SMALL = dict(model="cifar_sharesnet8", image_size=8)
# Synthetic data is generated on the device mesh from the seed, so 1 and 2 processes train on the
# very same global batches; digits exercise the per-process input shares.
SYNTHETIC = dict(SMALL, dataset="synthetic", num_classes=10, num_train_steps=6,
                 checkpoint_every_steps=2, log_every_steps=2, eval_batch_size=500)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Launcher:
    """Starts `main` processes with logs in files; kills whatever is still running at the end."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen, str]] = []

    def start(self, name: str, workdir, devices: int, fields: dict, *flags: str):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
            [f for f in os.environ.get("XLA_FLAGS", "").split()
             if "force_host_platform_device_count" not in f]
            + [f"--xla_force_host_platform_device_count={devices}"]))
        log = str(self.tmp_path / f"{name}.log")
        command = [sys.executable, "-m", "sharesnet_jax.main", "--config=tests/tiny_config.py",
                   f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in fields.items()),
                   *flags]
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        self.started.append((process, log))
        return process

    def start_two(self, name: str, workdir, fields: dict, *flags: str):
        port = _free_port()
        return [self.start(f"{name}{i}", workdir, 2, fields, "--num_processes=2",
                           f"--coordinator_address=127.0.0.1:{port}", f"--process_id={i}", *flags)
                for i in range(2)]

    def wait(self, processes, timeout: float = DEADLINE_S) -> list[int]:
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill_all()
                pytest.fail(f"a process ran past {timeout} s\n{self.tails()}")
        return [p.returncode for p in processes]

    def log(self, process) -> str:
        path = next(log for p, log in self.started if p is process)
        with open(path) as f:
            return f.read()

    def tails(self) -> str:
        return "\n".join(f"--- {log}\n{self.log(p)[-2500:]}" for p, log in self.started)

    def kill_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def launcher(tmp_path):
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.kill_all()


def _final_state(workdir, step: int) -> dict:
    """The checkpointed state as host arrays, whatever mesh wrote it."""
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                          getattr(metadata, "item_metadata", metadata))
    return jax.device_get(checkpointer.restore(path, target))


def _results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def test_two_processes_match_one_process_and_resume_after_both_are_killed(tmp_path, launcher):
    one, two = tmp_path / "one", tmp_path / "two"
    reference = launcher.start("one", one, 4, SYNTHETIC)  # alongside the first 2-process run
    first = launcher.start_two("first", two, SYNTHETIC)
    committed = two / "checkpoints" / "2"  # Orbax renames a step directory into place when done
    deadline = time.monotonic() + DEADLINE_S
    while not committed.is_dir() and all(p.poll() is None for p in first):
        assert time.monotonic() < deadline, launcher.tails()
        time.sleep(0.02)
    for process in first:
        process.kill()
    assert launcher.wait(first) == [-9, -9], launcher.tails()
    assert committed.is_dir() and not (two / "results.json").exists(), launcher.tails()

    newest = max(int(name) for name in os.listdir(two / "checkpoints") if name.isdigit())
    second = launcher.start_two("second", two, SYNTHETIC)
    assert launcher.wait(second + [reference]) == [0, 0, 0], launcher.tails()
    # Resumed, not restarted (a restart would end the same): only the remaining steps ran.
    assert _results(two)["steps_run"] == SYNTHETIC["num_train_steps"] - newest
    assert "over 2 process(es) (device ids by process: {0: [0, 1], 1: [" in launcher.log(second[1])

    expected, got = _results(one), _results(two)
    assert got["step"] == expected["step"] == 6
    assert got["eval_accuracy"] == expected["eval_accuracy"]
    assert got["eval_examples"] == expected["eval_examples"]
    np.testing.assert_allclose(got["eval_loss"], expected["eval_loss"], rtol=1e-5)
    expected_state, got_state = _final_state(one, 6), _final_state(two, 6)
    # Cross-process all-reduces (gloo) sum in another order than one process's: float32
    # rounding differences, grown over 6 steps, measured up to 2.2e-4 in parameters and 2.3e-3
    # in momentum on an AVX-512 host. A wrong share, batch or resume differs by orders more.
    for key, atol in (("params", 1e-3), ("batch_stats", 1e-3), ("opt_state", 1e-2)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=atol),
                     got_state[key], expected_state[key])


def test_sigterm_to_one_process_stops_both_at_one_step_and_eval_counts_each_example_once(
        tmp_path, launcher):
    data_dir, two = str(tmp_path / "tfds"), tmp_path / "two"
    fields = dict(SMALL, data_dir=data_dir, num_train_steps=30, checkpoint_every_steps=30)
    first = launcher.start_two("digits", two, fields)
    deadline = time.monotonic() + DEADLINE_S
    while "train_loss" not in launcher.log(first[1]):  # the preemption watch is on by then
        assert first[1].poll() is None and time.monotonic() < deadline, launcher.tails()
        time.sleep(0.05)
    first[1].send_signal(signal.SIGTERM)
    assert launcher.wait(first) == [0, 0], launcher.tails()
    stopped = [re.findall(r"Preempted: checkpoint at step (\d+)", launcher.log(p)) for p in first]
    assert len(stopped[0]) == 1 and stopped[0] == stopped[1], launcher.tails()  # the same step
    assert not (two / "results.json").exists()

    # Both processes evaluate that checkpoint, and so does this single process (one device).
    alone = tmp_path / "alone"
    shutil.copytree(two / "checkpoints", alone / "checkpoints")
    fields["eval_only"] = True
    evaluation = launcher.start_two("eval", two, fields)
    single = train.train_and_evaluate(tiny_config(**fields), str(alone))
    assert launcher.wait(evaluation) == [0, 0], launcher.tails()
    results = _results(two)
    assert (results["step"], results["steps_run"]) == (int(stopped[0][0]), 0)  # that checkpoint
    assert results["eval_examples"] == 300  # the digits test split
    assert single["eval_examples"] == 300
    assert single["eval_accuracy"] == results["eval_accuracy"]
    assert single["eval_top5_accuracy"] == results["eval_top5_accuracy"]
    np.testing.assert_allclose(single["eval_loss"], results["eval_loss"], rtol=1e-5)
    # Both evaluations above are eval_only ones: they would agree on any model. The state that
    # checkpoint holds, as a run with nothing left to train evaluates it, pins which one.
    finished = tmp_path / "finished"
    shutil.copytree(two / "checkpoints", finished / "checkpoints")
    done = train.train_and_evaluate(
        tiny_config(**dict(fields, eval_only=False, num_train_steps=int(stopped[0][0]))),
        str(finished))
    assert (done["step"], done["steps_run"]) == (int(stopped[0][0]), 0)
    assert done["params_fingerprint"] == results["params_fingerprint"]
    assert single["eval_accuracy"] == done["eval_accuracy"]
    np.testing.assert_allclose(single["eval_loss"], done["eval_loss"], rtol=1e-6)


def test_the_trainer_reads_this_processs_share_from_the_resume_step(monkeypatch):
    """The synthetic runs above make the same batches on every process, so they cannot see a
    trainer that reads process 0's share everywhere: the pipelines must be asked for THIS
    process's share (tests/data/test_shares.py checks the shares and resume positions)."""
    from sharesnet_jax.data import pipeline
    from sharesnet_jax.data.info import DatasetInfo
    from sharesnet_jax.training import trainer

    calls = {}

    def recorder(kind):
        def record(source, info, **kwargs):
            calls[kind] = kwargs
            return iter(())
        return record

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(pipeline, "train_batches", recorder("train"))
    monkeypatch.setattr(pipeline, "eval_batches", recorder("eval"))
    monkeypatch.setattr(trainer.sharding, "prefetch_to_mesh", lambda batches, mesh: batches)
    info = DatasetInfo(name="digits", num_classes=10, image_shape=(8, 8, 3),
                       num_train_examples=1497, num_eval_examples=300, mean=(0.0,) * 3,
                       std=(1.0,) * 3, augment="none", class_names=())
    config = tiny_config(batch_size=32, eval_batch_size=64)
    trainer.train_batches(config, info, mesh=None, start_step=7)
    trainer.eval_batches(config, info, mesh=None, plan=None)
    share = ("local_batch_size", "start_step", "process_index", "process_count")
    assert {key: calls["train"][key] for key in share} == dict(
        local_batch_size=16, start_step=7, process_index=1, process_count=2)
    assert {key: calls["eval"][key] for key in share[:1] + share[2:]} == dict(
        local_batch_size=32, process_index=1, process_count=2)


def test_a_process_that_cannot_join_fails_in_one_line(tmp_path, launcher):
    timeout = 5

    def lone(name: str, process_id: int):
        return launcher.start(name, tmp_path / name, 2, {}, f"--process_id={process_id}",
                              f"--coordinator_address=127.0.0.1:{_free_port()}",
                              "--num_processes=2", f"--initialization_timeout={timeout}")

    nobody_there = lone("unreachable", 1)  # no process 0 serves a coordinator at that port
    alone = lone("alone", 0)  # process 0 waits for a process 1 that never starts
    started = time.monotonic()
    assert launcher.wait([nobody_there, alone], timeout=120) == [1, 1], launcher.tails()
    assert time.monotonic() - started < 90
    expected = {
        nobody_there: "error: process 1 cannot reach the coordinator at 127.0.0.1:",
        alone: f"error: the multi-process run did not form within {timeout} s (process 0 of 2",
    }
    for process, start in expected.items():
        text = launcher.log(process)
        assert "Traceback" not in text and "Check failure" not in text, text[-3000:]
        assert text.strip().splitlines()[-1].startswith(start), text[-3000:]


def test_a_lone_process_never_waits_for_a_cluster(monkeypatch):
    monkeypatch.setattr(cluster, "_on_cloud_tpu_vm", lambda: False)
    assert cluster.cluster_settings(None, None, None, env={}) is None
    assert cluster.cluster_settings(None, 1, 0, env={"JAX_COORDINATOR_ADDRESS": "h:1"}) is None
    assert cluster.cluster_settings("h:1", 2, 1, env={}) == {
        "coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0"}
    assert cluster.cluster_settings(None, None, None, env={**slurm, "SLURM_NTASKS": "2"}) == {}
    assert cluster.cluster_settings(None, None, None, env={**slurm, "SLURM_NTASKS": "1"}) is None
    batch_script = {k: v for k, v in slurm.items() if k != "SLURM_STEP_NODELIST"}
    assert cluster.cluster_settings(None, None, None, env={**batch_script, "SLURM_NTASKS": "4"}) is None
    with pytest.raises(UserError, match="needs --coordinator_address"):
        cluster.cluster_settings(None, 2, None, env={})
    with pytest.raises(UserError, match="--process_id=2 must be below --num_processes=2"):
        cluster.cluster_settings("h:1", 2, 2, env={})
