"""What the benchmark scripts share: the train step exactly as the trainer builds it (a real
config of the schema, `run_setup.build_run`), step timing, one measurement per fresh worker
process under a time limit. The figures come from the package's own code: the FLOPs from the
planner's rule (`preflight.plan.train_flops_per_device`), the memory from the trainer's
`device_checks.Memory`, byte units from `units`, tables from the params table's writer.

Imports jax, flax, optax, numpy, ml_collections (pure Python: on a machine without it, install
its wheel with --no-deps) and the TF-free modules of sharesnet_jax, never tensorflow,
tensorflow_datasets or clu, so it runs on an accelerator machine that has JAX alone.

Every measurement runs in its own worker process (`python benchmarks/common.py --worker SPEC`):
compile times start from cold caches (JAX's persistent compilation cache is turned off, except
in gpu_bench's --smoke runs), the device's peak memory (`memory_stats()['peak_bytes_in_use']`,
GPU/TPU only) is that process's alone, and a compile that runs past its time limit is killed
without taking the rest of the run with it. The parent never touches the accelerator: on a GPU a
parent holding its own CUDA context would take memory from its workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a plain copy of the repository too (no `pip install`): its root on the path.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

import jax  # noqa: E402

from sharesnet_jax.data import synthetic  # noqa: E402
from sharesnet_jax.models import model_spec  # noqa: E402
from sharesnet_jax.models.stats import count_params, forward_macs  # noqa: E402
from sharesnet_jax.preflight.plan import train_flops_per_device  # noqa: E402
from sharesnet_jax.tables import markdown_table  # noqa: E402,F401 - the one table writer
from sharesnet_jax.training import recipes, sharding  # noqa: E402
from sharesnet_jax.training.config import DTYPES  # noqa: E402,F401 - the scripts' --dtype choices
from sharesnet_jax.training.device_checks import Memory  # noqa: E402
from sharesnet_jax.training.run_setup import build_run  # noqa: E402
from sharesnet_jax.training.steps import TrainState, create_replicated_state  # noqa: E402
from sharesnet_jax.units import GIB, MIB  # noqa: E402,F401 - the scripts' byte units

COMMON_PY = os.path.abspath(__file__)
RESULT_PREFIX = "BENCH_RESULT "
PHASE_PREFIX = "BENCH_PHASE "


# ---------------------------------------------------------------------------------------------
# The train step, exactly as sharesnet_jax.train builds it.


def run_config(spec: dict):
    """The run a measurement times, as a real config of the schema: the recipe of the model's
    family (the paper's SGD + Nesterov and stepped learning rate) on synthetic data."""
    imagenet = model_spec(spec["model"]).family.augment == "imagenet"
    config = recipes.imagenet_recipe(spec["model"]) if imagenet else recipes.cifar_recipe(
        spec["model"])
    config.update(dataset=synthetic.NAME, image_size=spec["image_size"],
                  num_classes=spec["num_classes"], batch_size=spec["batch"], dtype=spec["dtype"],
                  stage_impl=spec["stage_impl"], remat_policy=spec["remat_policy"],
                  dropout_rate=spec.get("dropout_rate"))
    if config.bn_group_size and spec["batch"] % config.bn_group_size:
        config.bn_group_size = 0  # the recipe's per-GPU groups do not divide this batch
    return config


@dataclasses.dataclass
class Bench:
    """A jitted train step with the state and the device-resident batch it runs on."""

    model: Any
    step: Callable  # jax.jit(...) exactly as train.py makes it
    state: TrainState
    batch: dict
    mesh: Any


def build_train_step(config, seed: int = 0) -> Bench:
    """The train step of `train_and_evaluate`, built by the same code (`run_setup.build_run`):
    the state created under jit replicated over a 1-D data mesh of every device, the step jitted
    with state replicated, batch sharded along 'data' and the state donated; data from
    `synthetic`, already on the devices."""
    info = synthetic.synthetic_info(config.image_size, config.num_classes)
    run = build_run(config, info)
    state = create_replicated_state(run.model, run.tx, seed, info.image_shape, run.mesh)
    batch = synthetic.synthetic_batch(info, sharding.batch_sharded(run.mesh), config.batch_size,
                                      seed)
    return Bench(model=run.model, step=run.train_step, state=state, batch=batch, mesh=run.mesh)


def time_steps(step: Callable, state, batch, *, warmup: int, steps: int):
    """Runs `warmup` untimed steps, then `steps` steps each timed to completion
    (`block_until_ready`); returns the final state and the per-step seconds."""
    metrics = None
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        seconds.append(time.perf_counter() - start)
    return state, seconds


# ---------------------------------------------------------------------------------------------
# The environment.


def host_environment() -> dict:
    """Versions and the host, without initialising any backend (safe in a parent process)."""
    import flax
    import jaxlib
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "cpu": cpu_model(), "cpu_cores": cpu_cores(), "load": load_average()}


def environment() -> dict:
    """Versions and the devices; calling it initialises the backend (workers only)."""
    devices = jax.devices()
    return {**host_environment(), "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind, "device_count": len(devices)}


def load_average() -> float | None:
    """The host's 1-minute load average: above its core count, other work shared the CPUs."""
    try:
        return round(os.getloadavg()[0], 1)
    except (AttributeError, OSError):
        return None


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment(env: dict | None) -> str:
    """One line; without a worker's `env` (none finished) the devices are not named."""
    env = env or host_environment()
    devices = (f"{env['device_count']} x {env['device_kind']} ({env['backend']})"
               if "device_kind" in env else "devices not queried (no measurement finished)")
    load = f" (load average {env['load']})" if env.get("load") is not None else ""
    return (f"machine: {devices}; host {env['cpu']}, {env['cpu_cores']} cores{load}; python "
            f"{env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, flax {env['flax']}, "
            f"optax {env['optax']}")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    shown = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script, *shown])


# ---------------------------------------------------------------------------------------------
# One measurement (in a worker process).


def make_spec(model: str, *, batch: int, image_size: int | None = None, dtype: str = "float32",
              stage_impl: str = "loop", remat_policy: str = "none", num_classes: int | None = None,
              dropout_rate: float | None = None, steps: int = 10, warmup: int = 2,
              **extra) -> dict:
    """A measurement, as JSON-able fields. `dropout_rate` None keeps the model's (0, except
    where a caller sets the paper's 0.3 for WRN-28-10 on CIFAR-100)."""
    family = model_spec(model).family
    if num_classes is None:  # the paper trains WRN-28-10 on CIFAR-100
        num_classes = 100 if model.endswith("wrn28_10") else family.num_classes
    return dict(model=model, batch=batch, image_size=image_size or family.image_size,
                dtype=dtype, stage_impl=stage_impl, remat_policy=remat_policy,
                num_classes=num_classes,
                dropout_rate=dropout_rate, steps=steps, warmup=warmup, **extra)


def _phase(name: str) -> None:
    print(f"{PHASE_PREFIX}{name}", flush=True)


def measure(spec: dict) -> dict:
    """Builds the model's train step, compiles it ahead of time and times it."""
    env = environment()
    _phase("init")
    bench = build_train_step(run_config(spec))
    image_shape = (spec["image_size"], spec["image_size"], 3)
    _phase("counting MACs")
    macs = spec.get("macs") or forward_macs(bench.model, image_shape)
    train_flops = train_flops_per_device(bench.model, image_shape, 1)  # per image, the planner's
    params = count_params(bench.state.params)

    _phase("lowering")
    start = time.perf_counter()
    lowered = bench.step.lower(bench.state, bench.batch)
    lowered_at = time.perf_counter()
    _phase("compile")
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    memory = Memory.of(compiled)

    _phase("steps")
    state, seconds = time_steps(compiled, bench.state, bench.batch, warmup=spec["warmup"],
                                steps=spec["steps"])
    step_s = statistics.median(seconds)
    device_stats = jax.local_devices()[0].memory_stats() or {}
    result = {
        "env": env, "params": params, "macs": macs, "train_flops_per_image": train_flops,
        "lower_s": lowered_at - start, "compile_s": compiled_at - lowered_at,
        "step_s": step_s, "step_s_all": seconds,
        "images_per_s": spec["batch"] / step_s,
        "temp_bytes": memory.temporaries, "argument_bytes": memory.arguments,
        "output_bytes": memory.outputs, "alias_bytes": memory.aliased,
        "peak_bytes": device_stats.get("peak_bytes_in_use"),
    }
    del state
    return result


def worker_main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    if not spec.get("persistent_cache", False):
        # Cold compiles: a cache shared with earlier runs (the tests set one) would time a read.
        jax.config.update("jax_enable_compilation_cache", False)
    result = measure(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Running workers (in the parent).


def run_worker(spec: dict, timeout_s: float) -> dict:
    """Measures `spec` in a fresh process; on failure or timeout returns {'error': why}."""
    command = [sys.executable, COMMON_PY, "--worker", json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout_s, 1))
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (
            err.stdout or "")
        phases = [line[len(PHASE_PREFIX):] for line in out.splitlines()
                  if line.startswith(PHASE_PREFIX)]
        during = f" during {phases[-1]}" if phases else ""
        return {"error": f"time limit: stopped after {timeout_s:.0f} s{during}",
                "timeout": True, "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["wall_s"] = wall
            return result
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit status {done.returncode}"
    return {"error": f"failed: {why[:300]}", "wall_s": wall}


def run_all(specs: Iterable[dict], *, budget_s: float | None = None,
            max_seconds: float | None = None, min_start_s: float = 5.0,
            log: Callable[[str], None] | None = None) -> list[tuple[dict, dict]]:
    """Runs the specs in order, each in its own worker. A spec's time limit is the least of
    `max_seconds`, its own 'max_seconds' and what is left of `budget_s`; one that would start
    with under `min_start_s` left is skipped."""
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    results = []
    known_macs = {}  # the same net under another stage_impl: its MACs need not be recounted
    for spec in specs:
        shape_key = (spec["model"], spec["image_size"], spec["num_classes"])
        if shape_key in known_macs:
            spec = {**spec, "macs": known_macs[shape_key]}
        limits = [s for s in (max_seconds, spec.get("max_seconds")) if s]
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left < min_start_s:
                results.append((spec, {"error": f"skipped: the {budget_s:.0f} s budget was spent",
                                       "skipped": True}))
                if log:
                    log(f"skipped {label(spec)}: budget spent")
                continue
            limits.append(left)
        limit = min(limits) if limits else 24 * 3600.0
        if log:
            log(f"measuring {label(spec)} (limit {limit:.0f} s)")
        result = run_worker(spec, limit)
        if "macs" in result:
            known_macs[shape_key] = result["macs"]
        if log:
            log(f"  {'error: ' + result['error'] if 'error' in result else 'done'} "
                f"({result.get('wall_s', 0):.1f} s)")
        results.append((spec, result))
    return results


def label(spec: dict) -> str:
    remat = "" if spec["remat_policy"] == "none" else f", remat {spec['remat_policy']}"
    return (f"{spec['model']} [{spec['stage_impl']}{remat}, "
            f"{spec['dtype']}, {spec['batch']}x{spec['image_size']}x{spec['image_size']}]")


def first_env(results: Iterable[tuple[dict, dict]]) -> dict | None:
    return next((r["env"] for _, r in results if "env" in r), None)


# ---------------------------------------------------------------------------------------------
# Derived figures and formatting.


def train_tflops(result: dict) -> float:
    """FLOP/s of training in TFLOP/s, by the planner's count: 2 FLOPs per forward multiply-add
    times the step's convolution passes (3; 4 with remat_policy='full', which runs the forward
    twice), so a rematerialised step is credited with the forward it recomputes."""
    return result["images_per_s"] * result["train_flops_per_image"] / 1e12


def mfu(result: dict, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: training FLOP/s over the peak of all devices used."""
    if not peak_tflops:
        return None
    return train_tflops(result) / (peak_tflops * result["env"]["device_count"])


def fmt(value, spec: str = ",.1f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def fmt_bytes(value, unit: int = MIB) -> str:
    return fmt(None if value is None else value / unit)




if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python benchmarks/common.py --worker SPEC_JSON (used by the benchmarks)")
