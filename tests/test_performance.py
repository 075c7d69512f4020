"""Behaviour the performance depends on, and the benchmark scripts themselves.

The jitted train step is traced and compiled once, then reused; sharing changes parameters, not
compute; the accelerator benchmark (benchmarks/gpu_bench.py) runs where TensorFlow, TFDS
and clu are absent. Nothing here asserts a speed.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from sharesnet_jax import train
from sharesnet_jax.data.synthetic import synthetic_info
from sharesnet_jax.models.stats import forward_macs
from sharesnet_jax.training import run_setup
from sharesnet_jax.training.run_setup import build_run
from sharesnet_jax.training.steps import create_train_state
from tests.helpers import ROOT, tiny_config

BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import common  # noqa: E402  (benchmarks/common.py)

BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")


# ---------------------------------------------------------------------------------------------
# The step is traced and compiled once.


def _counting(make_step, traces):
    def make(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def counted(state, batch):
            traces.append(jax.tree.map(lambda x: (x.shape, x.dtype), batch))  # at trace time
            return step(state, batch)

        return counted

    return make


def test_trainer_traces_its_train_step_once(tmp_path, monkeypatch):
    """train.train_and_evaluate's own jitted step: 5 steps, one trace (a retrace would mean a
    recompile, e.g. if the state a step returns differed in sharding, dtype or weak type from
    the state it was given)."""
    traces = []
    monkeypatch.setattr(run_setup, "make_train_step", _counting(run_setup.make_train_step, traces))
    config = tiny_config(dataset="synthetic", image_size=16, num_classes=10,
                         model="cifar_sharesnet8", batch_size=8, eval_batch_size=500,
                         num_train_steps=5, log_every_steps=1, checkpoint_every_steps=2)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["step"] == 5
    assert len(traces) == 1


def test_benchmark_step_compiles_once_and_donates_the_state(monkeypatch):
    """The step the benchmarks time (benchmarks/common.py builds it with the trainer's code)."""
    traces = []
    monkeypatch.setattr(run_setup, "make_train_step", _counting(run_setup.make_train_step, traces))
    spec = common.make_spec("cifar_sharesnet8", batch=4, image_size=16, num_classes=10)
    bench = common.build_train_step(common.run_config(spec))
    first = bench.state
    state, metrics = bench.step(first, bench.batch)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(first))  # donated
    state, metrics = bench.step(state, bench.batch)
    state, seconds = common.time_steps(bench.step, state, bench.batch, warmup=1, steps=2)
    assert int(state.step) == 5 and len(seconds) == 2
    assert len(traces) == 1
    assert bench.step._cache_size() == 1
    replicated = common.sharding.replicated(bench.mesh)
    assert all(leaf.sharding == replicated for leaf in jax.tree.leaves(state))
    assert bench.batch["image"].sharding == common.sharding.batch_sharded(bench.mesh)


# ---------------------------------------------------------------------------------------------
# Sharing changes parameters, not compute.


def _step_flops(name: str, batch: int) -> tuple[float, float, int]:
    """XLA's flop count of the lowered train step and of its train-mode forward, on shapes."""
    spec = common.make_spec(name, batch=batch, num_classes=10)
    size = spec["image_size"]
    run = build_run(common.run_config(spec), synthetic_info(size, 10))
    model = run.model
    state = jax.eval_shape(lambda: create_train_state(model, run.tx, 0, (size, size, 3)))
    batch_shapes = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8),
                    "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}
    step_flops = run.train_step.lower(state, batch_shapes).cost_analysis()["flops"]
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    forward_flops = forward.lower(variables, images).cost_analysis()["flops"]
    return step_flops, forward_flops, forward_macs(model, (size, size, 3))


@pytest.mark.parametrize("plain, shared", [("cifar_resnet20", "cifar_sharesnet20"),
                                           ("resnet50", "sharesnet50")])
def test_compiler_counts_the_same_compute_with_and_without_sharing(plain, shared):
    """XLA's own count: the same forward flops, train steps within 0.1% (the shared kernel's
    fewer parameters save optimizer arithmetic); and a step costs about 6 flops per forward
    multiply-add per image, the factor the benchmarks' MFU assumes."""
    batch = 4
    plain_step, plain_forward, macs = _step_flops(plain, batch)
    shared_step, shared_forward, shared_macs = _step_flops(shared, batch)
    assert shared_forward == plain_forward and shared_macs == macs
    assert abs(shared_step / plain_step - 1) < 1e-3
    assert 5.0 < plain_step / (batch * macs) < 7.0


# ---------------------------------------------------------------------------------------------
# The benchmark scripts.

# Makes the packages absent rather than broken: the path finder stops seeing them, so `import
# tensorflow` raises ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` is None,
# as on a machine without TensorFlow. (A finder that raised from find_spec would also turn that
# probe into an exception: etils makes it for JAX's persistent compilation cache, which then
# fails, something no machine without TensorFlow does.) Each process leaves a file named by its
# pid, listing the blocked imports it attempted.
SITECUSTOMIZE = """
import importlib.machinery
import os
import sys

BLOCKED = {blocked!r}
MARK = os.path.join({marks!r}, str(os.getpid()))
open(MARK, "w").close()


class PathFinderWithout:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(MARK, "a") as f:
                f.write(name + "\\n")
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [PathFinderWithout if finder is importlib.machinery.PathFinder else finder
                    for finder in sys.meta_path]
"""


def _blocked_env(tmp_path: pathlib.Path) -> tuple[dict, pathlib.Path]:
    """An environment whose Python processes (children too) cannot import TF, TFDS,
    or clu, as on the GPU machine: a sitecustomize.py first on PYTHONPATH."""
    marks = tmp_path / "processes"
    marks.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(SITECUSTOMIZE).format(blocked=BLOCKED, marks=str(marks)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env, marks


def test_gpu_bench_smoke_runs_without_tensorflow_tfds_or_clu(tmp_path):
    env, marks = _blocked_env(tmp_path)
    for name in BLOCKED:
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and f"No module named '{name}'" in probe.stderr
    for mark in marks.iterdir():
        mark.unlink()

    done = subprocess.run([sys.executable, "benchmarks/gpu_bench.py", "--smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    rows = [line for line in out.splitlines() if line.startswith("| smoke")]
    assert len(rows) == 3
    assert not any("failed" in row or "time limit" in row or "skipped" in row for row in rows)
    assert "x the params of cifar_resnet20" in out and "scan vs loop: compile" in out
    # The parent and its three workers all ran under the blocker.
    assert len(list(marks.iterdir())) >= 4


def test_a_measurement_past_its_time_limit_is_stopped_and_reported():
    spec = common.make_spec("cifar_sharesnet8", batch=2, image_size=16, steps=1, warmup=0)
    result = common.run_worker(spec, timeout_s=1)
    assert result.get("timeout") and result["error"].startswith("time limit: stopped after 1 s")
    (_, skipped), = common.run_all([spec], budget_s=0.0)
    assert skipped.get("skipped") and "budget" in skipped["error"]


def test_throughput_and_compile_time_scripts_print_their_tables():
    tiny = ["--models", "cifar_sharesnet8", "--batch", "2", "--image-size", "8",
            "--steps", "1", "--warmup", "0"]
    done = subprocess.run([sys.executable, "benchmarks/throughput.py", *tiny,
                           "--peak-tflops", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "command: python benchmarks/throughput.py --models cifar_sharesnet8" in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| cifar_sharesnet8")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[4] == "77,850" and cells[-1] == ""  # params, and no error note

    done = subprocess.run([sys.executable, "benchmarks/compile_time.py", *tiny,
                           "--impls", "scan"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| cifar_sharesnet8")]
    assert "| scan |" in row and "| 3 " in row  # 3 blocks



def test_gpu_bench_full_plan_reports_every_measurement_it_had_no_time_for():
    done = subprocess.run([sys.executable, "benchmarks/gpu_bench.py", "--budget-seconds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith("| ") and "skipped: the 1 s budget was spent" in line]
    models = [row.split("|")[2].strip() for row in rows]
    assert models == ["resnet50", "sharesnet50", "wrn28_10", "sharewrn28_10", "resnet152",
                      "sharesnet152", "cifar_sharesnet164", "cifar_sharesnet164",
                      "cifar_sharesnet1001", "cifar_sharesnet1001"]
    assert "bfloat16" in rows[0] and "256x224px" in rows[0] and "512x32px" in rows[2]
