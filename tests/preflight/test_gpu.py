"""The planner for NVIDIA GPUs: the trainer's steps compiled by XLA's CUDA compiler for vendored
GPU targets on this CPU machine (no GPU), with memory and all-reduce bytes against hand counts,
the over-capacity refusal XLA itself never gives on GPU, and one-line errors.

Needs the CUDA plugin (the `gpu` extra). Without it these tests fail at collection, loudly, as
the TPU ones do without libtpu.
"""

import importlib.metadata
import json
import math
import subprocess
import sys

import pytest

from sharesnet_jax import preflight
# Not from sharesnet_jax.aot: importing the CLI sets its environment (TPU_WORKER_HOSTNAMES)
# in this test process, which every later subprocess would inherit.
from sharesnet_jax.preflight import FAST_COMPILE_OPTIONS as FAST
from sharesnet_jax.preflight import gpu
from sharesnet_jax.training.recipes import cifar_recipe
from tests.helpers import ROOT

try:
    importlib.metadata.version("jax-cuda12-plugin")
except importlib.metadata.PackageNotFoundError as err:
    raise ImportError('tests/preflight/test_gpu.py needs the CUDA plugin: pip install -e '
                      '".[gpu]"') from err

# Pre-activation ResNet-20 (CIFAR-10) by hand: 3x3 stem 3->16; stage 1: six 3x3 16->16; stage 2:
# 3x3 16->32, 1x1 projection 16->32, five 3x3 32->32; stage 3 likewise 32->64; BatchNorm scale
# and bias of 7 x 16, 6 x 32 and 6 x 64 channels; the head 64 x 10 + 10.
RESNET20_PARAMS = (27 * 16 + 6 * 9 * 16 * 16 + 9 * 16 * 32 + 16 * 32 + 5 * 9 * 32 * 32
                   + 9 * 32 * 64 + 32 * 64 + 5 * 9 * 64 * 64 + 2 * (16 * 7 + 32 * 6 + 64 * 6)
                   + 64 * 10 + 10)
BN_STATISTICS = 2 * (16 * 7 + 32 * 6 + 64 * 6)  # mean and variance per channel


def resnet20(batch_size: int):
    config = cifar_recipe("cifar_resnet20")
    config.batch_size = batch_size
    return config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sharesnet_jax.aot", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=400)


def test_resnet20_for_one_and_eight_h100s_against_hand_counts():
    """Arguments: the replicated state (parameters and SGD's momentum, 4 B each, and BatchNorm
    statistics) plus this device's share of the uint8 images and int32 labels. All-reduce: none
    on one GPU; on eight, every gradient once in float32 plus BatchNorm's mean and mean square
    forward and backward (4 B x 2 per statistic)."""
    assert RESNET20_PARAMS == 272_282  # the paper's 0.27M
    plans = {n: preflight.plan(resnet20(64), f"h100:{n}", include_eval=False,
                               compiler_options=FAST) for n in (1, 8)}
    for n, plan in plans.items():
        per_gpu = 64 // n
        assert plan.target.num_devices == n and plan.train.per_device_batch == per_gpu
        assert plan.target.devices[0].device_kind == "NVIDIA H100 80GB HBM3"
        state = 4 * (2 * RESNET20_PARAMS + BN_STATISTICS)
        batch = per_gpu * (32 * 32 * 3 + 4)
        arguments = plan.train.compiled.memory.arguments
        assert state + batch <= arguments <= state + batch + 64, (n, arguments, state + batch)
        assert plan.target.accelerator.usable_bytes == int(0.75 * 84942979072)
    assert plans[1].all_reduce_total == 0
    eight = plans[8]
    # (+ a few bytes of metrics)
    assert set(eight.all_reduce) == {"f32"}, eight.all_reduce
    assert 0 <= eight.all_reduce_total - (4 * RESNET20_PARAMS + 8 * BN_STATISTICS) <= 16
    assert eight.gradients_reduced_once and not eight.other_collectives
    # The per-device batch is 8x smaller on eight GPUs: so are the activations.
    assert eight.train.compiled.memory.temporaries < plans[1].train.compiled.memory.temporaries


def test_h100x8_plan_as_json_on_stdout():
    result = cli("--config=configs/default.py", "--topology=h100:8", "--noeval",
                 "--fast_compile", "--json=-", "--config.batch_size=64")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert "8 GPUs, 1 host(s)" in result.stderr  # the table, on stderr when JSON takes stdout
    assert record["fits"] is True and record["target"]["devices"] == 8
    assert record["target"]["kind"] == "gpu" and record["train"]["per_device_batch"] == 8
    assert record["gradients_reduced_once"] is True
    assert record["train"]["xla_flops"] is None  # CUDA programs have no cost analysis
    memory = record["train"]["memory_bytes"]
    assert 0 < memory["total"] <= record["target"]["usable_bytes"]
    assert record["largest_per_device_batch_estimate"] >= 8


def test_over_capacity_on_an_a100_40_is_one_line_with_a_compiled_suggestion(tmp_path):
    """XLA compiles any GPU program however large; the planner compares with the 75% JAX may
    use of the A100's 39.4 GiB, suggests a batch from that compile's own figures and compiles
    it once to confirm."""
    out = tmp_path / "verdict.json"
    result = cli("--config=configs/default.py", "--topology=a100-40:1", "--noeval",
                 "--fast_compile", "--config.batch_size=262144", f"--json={out}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: cifar_sharesnet20 at 262144 images per GPU needs ")
    assert "one a100-40 GPU has 29.57 GiB usable" in lines[0]
    record = json.loads(out.read_text())
    assert record["fits"] is False and record["needed_bytes"] > record["usable_bytes"]
    # Linear in the batch (the tiny state aside): 262144 x usable / needed, rounded down to a
    # power of two; that batch is compiled once and fits.
    linear = 262144 * record["usable_bytes"] / record["needed_bytes"]
    suggested = record["suggested_per_device_batch"]
    assert suggested == 2 ** math.floor(math.log2(linear)), (suggested, linear)
    assert record["suggestion_compiled"] is True
    assert f"--config.batch_size={suggested} ({suggested} per GPU) fits (compiled: " in lines[0]
    assert record["suggestion_total_bytes"] <= record["usable_bytes"]
    assert "--config.remat_policy=conv_outputs" in lines[0]


@pytest.mark.parametrize("topology, expected", [
    ("h300:8", "GPU among a100-40, a100-80, h100, h200"),
    ("h100:3", "N GPUs per host in 1, 2, 4, 8"),
    ("h100:0x8", "N GPUs per host in 1, 2, 4, 8"),
])
def test_bad_gpu_topologies_are_one_line(topology, expected):
    result = cli("--config=configs/default.py", f"--topology={topology}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, \
        result.stderr[-2000:]
    assert topology in lines[0] and expected in lines[0], lines[0]


def test_missing_gpu_extra_is_one_line(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        if name == "jax-cuda12-plugin":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(preflight.PlanError, match=r'needs the CUDA plugin: pip install -e "\.\[gpu\]"'):
        gpu.gpu_cluster("h100:8")


def test_two_hosts_of_eight_and_the_network_bound():
    """h100:2x8 is 16 GPUs on 2 hosts; the ring then runs at the assumed per-GPU network link
    (50 GB/s), not NVLink's 450 GB/s each way."""
    cluster = gpu.gpu_cluster("h100:2x8")
    assert (cluster.num_devices, cluster.hosts) == (16, 2)
    assert {d.process_index for d in cluster.devices} == {0, 1}
    assert cluster.all_reduce_bandwidth == 50e9
    assert gpu.gpu_cluster("h100:8").all_reduce_bandwidth == 450e9


def test_memory_fraction_follows_jax(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    assert gpu.accelerator("h200").usable_bytes == int(0.9 * 151397597184)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "lots")
    with pytest.raises(preflight.PlanError, match="XLA_PYTHON_CLIENT_MEM_FRACTION='lots'"):
        gpu.accelerator("h200")
