"""CPU step time of the default run's train step: the once-per-parameter gradient reduce
(`shard_map`, what the trainer runs) against the step that left the all-reduce to the
partitioner (what it ran before), interleaved in one process so both see the same machine.

    python benchmarks/reduce_step_time.py [--config configs/default.py] [--rounds 7] [--steps 10]

Both steps are built by `run_setup.build_run` from the config, on every local device, on
synthetic batches of the config's shape; the 'partitioner' step is the same code with the
explicit reduce replaced by plain `jax.value_and_grad` under jit. Prints the median seconds per
step of each and their ratio.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

from sharesnet_jax.data import synthetic  # noqa: E402
from sharesnet_jax.training import sharding, steps  # noqa: E402
from sharesnet_jax.training.run_setup import build_run  # noqa: E402


def _partitioner_reduced(model, mesh, label_smoothing, reduce_dtype):
    return functools.partial(steps._value_and_grad, model, label_smoothing)


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.dataset = synthetic.NAME
    config.image_size, config.num_classes = config.image_size or 32, 10
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and variant")
    args = parser.parse_args()
    config = load_config(args.config)
    info = synthetic.synthetic_info(config.image_size, config.num_classes)
    runs = {"once per parameter": build_run(config, info)}
    with mock.patch.object(steps, "_data_parallel_grads", _partitioner_reduced):
        runs["partitioner"] = build_run(config, info)
    mesh = runs["partitioner"].mesh
    batches = [synthetic.synthetic_batch(info, sharding.batch_sharded(mesh), config.batch_size, i)
               for i in range(args.steps)]
    states = {name: steps.create_replicated_state(run.model, run.tx, config.seed,
                                                  info.image_shape, run.mesh)
              for name, run in runs.items()}
    for name, run in runs.items():  # compile and warm up
        states[name], _ = run.train_step(states[name], batches[0])
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            state = states[name]
            jax.block_until_ready(state)
            start = time.perf_counter()
            for batch in batches:
                state, metrics = run.train_step(state, batch)
            jax.block_until_ready(metrics)
            seconds[name].append((time.perf_counter() - start) / len(batches))
            states[name] = state
    print(f"{config.model}, batch {config.batch_size}, {jax.device_count()} {jax.default_backend()}"
          f" device(s), {args.rounds} interleaved rounds of {args.steps} steps")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"  {name:20s} {1e3 * median:8.1f} ms/step (median; rounds "
              f"{', '.join(f'{1e3 * v:.0f}' for v in seconds[name])})")
    ratio = medians["once per parameter"] / medians["partitioner"]
    print(f"  once per parameter / partitioner: {ratio:.3f}")


if __name__ == "__main__":
    main()
