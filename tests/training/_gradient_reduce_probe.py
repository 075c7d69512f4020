"""Run in a fresh process with 8 fake CPU devices (XLA_FLAGS must be set before jax imports) by
tests/training/test_gradient_reduce.py: `python -m tests.training._gradient_reduce_probe PART`
prints one JSON value of measurements (PART: a model name, or 'gaps')."""

import os

if __name__ == "__main__":  # imported by the test for `tiny` alone: leave its jax alone
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sharesnet_jax.models import create_model  # noqa: E402
from sharesnet_jax.models.stats import count_params  # noqa: E402
from sharesnet_jax.training import sharding, steps  # noqa: E402
from sharesnet_jax.preflight.hlo import _ARRAY, _ALL_REDUCE, all_reduce_bytes  # noqa: E402

MEAN, STD = (127.0, 127.0, 127.0), (64.0, 64.0, 64.0)
IMAGE = (8, 8, 3)
BATCH = 16  # 2 per device
TX = optax.sgd(0.1, momentum=0.9)
SCHEDULE = optax.constant_schedule(0.1)


def tiny(name: str, **fields):
    """Widths 4, 8, 8: every stage keeps its 3 blocks, so the shared twin removes one 3x3
    kernel per stage (two kernels replaced by the stage's one)."""
    return create_model(name, num_classes=10, stage_features=(4, 8, 8), **fields)


def batch(mesh, seed: int):
    rng = np.random.default_rng(seed)
    split = sharding.batch_sharded(mesh)
    return {"image": jax.device_put(rng.integers(0, 256, (BATCH, *IMAGE), dtype=np.uint8), split),
            "label": jax.device_put(rng.integers(0, 10, (BATCH,), dtype=np.int32), split)}


def compiled_step(model, mesh, dtype: str):
    step = steps.make_train_step(model, TX, SCHEDULE, MEAN, STD, grad_reduce_dtype=dtype,
                                 mesh=mesh)
    state = steps.create_replicated_state(model, TX, 0, IMAGE, mesh)
    jitted = steps.jit_on_mesh(step, mesh, donate_state=False)
    return jitted, state


def all_reduce_elements(hlo: str) -> int:
    """Elements (not bytes) of the all-reduces outside loops: the CPU backend promotes a bfloat16
    all-reduce to float32, so only the element count is comparable there."""
    total = 0
    for line in hlo.splitlines():
        match = _ALL_REDUCE.search(line)
        if match:
            for _, dims in _ARRAY.findall(match.group(1)):
                total += int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


# Every layout, and each remat policy under one of them (a scanned gradient compiles slowly here).
LAYOUTS = (("loop", "none"), ("loop", "full"), ("scan", "none"), ("scan", "conv_outputs"))


def _row(name, state, impl, policy, dtype, **measured) -> dict:
    return dict(model=name, impl=impl, policy=policy, dtype=dtype,
                params=count_params(state.params),
                statistics=sum(x.size for x in jax.tree.leaves(state.batch_stats)), **measured)


def bytes_matrix(name: str) -> list[dict]:
    """The all-reduces of `name`'s compiled step in each layout (float32), and in bfloat16."""
    mesh = sharding.make_data_mesh()
    rows = []
    for impl, policy in LAYOUTS:
        jitted, state = compiled_step(tiny(name, stage_impl=impl, remat_policy=policy), mesh,
                                      "float32")
        compiled = jitted.lower(state, batch(mesh, 0)).compile()
        rows.append(_row(name, state, impl, policy, "float32",
                         compiled=all_reduce_bytes(compiled.as_text())))
    jitted, state = compiled_step(tiny(name), mesh, "bfloat16")
    lowered = jitted.lower(state, batch(mesh, 0))
    rows.append(_row(name, state, "loop", "none", "bfloat16",
                     lowered=all_reduce_bytes(lowered.as_text(dialect="hlo")),
                     compiled_elements=all_reduce_elements(lowered.compile().as_text())))
    return rows


def reference_update(model, state, images, labels):
    """The textbook step, written here: the gradient of the mean loss over the whole batch on
    one device, and optax's update."""

    def loss(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            (images.astype(jnp.float32) - jnp.asarray(MEAN)) / jnp.asarray(STD), train=True,
            mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    grads, batch_stats = jax.grad(loss, has_aux=True)(state.params)
    updates, _ = TX.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), batch_stats


def _largest_gap(actual, expected) -> float:
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)))


def dropout_masks_per_example() -> bool:
    """Eight identical examples, one per device, through a dropout net in training mode: their
    logits differ only if every device draws its own masks."""
    mesh = sharding.make_data_mesh()
    model = create_model("sharewrn16_4", num_classes=10, stage_features=(4, 4, 4),
                         dropout_rate=0.5)
    state = steps.create_replicated_state(model, TX, 0, IMAGE, mesh)
    value_and_grad = steps._data_parallel_grads(model, mesh, 0.0, jnp.float32)
    images = jax.device_put(np.ones((8, *IMAGE), np.float32), sharding.batch_sharded(mesh))
    labels = jax.device_put(np.zeros((8,), np.int32), sharding.batch_sharded(mesh))
    (_, (logits, _)), _ = jax.jit(value_and_grad)(state.params, state.batch_stats, images,
                                                  labels, jax.random.key_data(jax.random.key(3)))
    logits = np.asarray(logits)
    return all(not np.allclose(logits[i], logits[j]) for i in range(8) for j in range(i))


def update_gaps() -> dict:
    """Largest |new step - reference| over parameters, relative to the largest update, and over
    BatchNorm's running statistics."""
    mesh = sharding.make_data_mesh()
    model = tiny("cifar_sharesnet20")
    data = batch(mesh, 1)
    gaps = {}
    for dtype in ("float32", "bfloat16"):
        jitted, state = compiled_step(model, mesh, dtype)
        expected, expected_stats = jax.jit(reference_update, static_argnums=0)(
            model, jax.device_get(state), np.asarray(data["image"]), np.asarray(data["label"]))
        new, _ = jitted(state, data)
        gaps[dtype] = _largest_gap(new.params, expected) / _largest_gap(expected, state.params)
        gaps[f"{dtype} batch_stats"] = _largest_gap(new.batch_stats, expected_stats)
    gaps["dropout masks per example"] = dropout_masks_per_example()
    return gaps


if __name__ == "__main__":
    part = sys.argv[1]
    print(json.dumps(update_gaps() if part == "gaps" else bytes_matrix(part)))
