"""The train state and the pure train/eval step functions.

JAX-only (no TensorFlow, TFDS or clu), so benchmarks run them on machines that have JAX alone.
Images arrive as uint8 and are normalised here, on the device: a quarter of the host-to-device
traffic of float32 batches.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from sharesnet_jax.errors import check_one_of
from sharesnet_jax.training import sharding

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
# The element type each gradient is all-reduced in, once per parameter (see make_train_step).
GRAD_REDUCE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # completed optimizer steps
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; the key of step s is fold_in(rng, s)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                       image_shape: Sequence[int]) -> TrainState:
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
    # The initial state is replicated, so the partitionable threefry buys nothing here, and
    # XLA:CPU compiles the init nearly 3x faster without it (ResNet-20: 10.9 s -> 3.9 s).
    with jax.threefry_partitionable(False):
        variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=step_rng)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    images = images.astype(jnp.float32)
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mean: Sequence[float], std: Sequence[float],
                    label_smoothing: float = 0.0,
                    skip_nonfinite: bool = False, grad_reduce_dtype: str = "float32",
                    mesh: Mesh | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """One data-parallel SGD step over `mesh` (default: every device), to be jitted over it.

    Each device computes the gradients of its shard of the batch, so the uses of a shared
    kernel are summed on the device, and then every gradient leaf is averaged over the data axis
    with ONE all-reduce in `grad_reduce_dtype`. Left to the partitioner, a replicated-params jit
    all-reduces a shared kernel's gradient once per use, and inside a scanned stage once per
    iteration: ShaResNet's parameter saving would never reach the wire.

    BatchNorm statistics stay those of the global batch: the model's BatchNorm averages them
    over the data axis (`norm_axis_name`), or forms `bn_group_size` groups within a device or
    over consecutive devices (models/batch_norm.py).
    Each device folds its index into the dropout key, so every example draws its own mask.

    With `skip_nonfinite`, a step whose loss, gradients or new state are not finite leaves the
    state as it was (the step counter still advances); `nonfinite=1` reports it either way.
    """
    check_one_of("grad_reduce_dtype", grad_reduce_dtype, GRAD_REDUCE_DTYPES)
    value_and_grad = _data_parallel_grads(model, mesh or sharding.make_data_mesh(),
                                          label_smoothing, GRAD_REDUCE_DTYPES[grad_reduce_dtype])

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        images = normalize(batch["image"], mean, std)
        labels = batch["label"]
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        (loss, (logits, batch_stats)), grads = value_and_grad(
            state.params, state.batch_stats, images, labels, dropout_rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        # The new parameters too: a finite loss can still produce an overflowing update, and
        # a checkpoint must never hold NaN or Inf.
        finite = (jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
                  & jnp.isfinite(optax.global_norm((params, batch_stats))))
        if skip_nonfinite:
            kept = state.replace(step=state.step + 1)
            new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "learning_rate": schedule(state.step),
            "nonfinite": 1 - finite.astype(jnp.int32),
        }
        return new_state, metrics

    return train_step


def _value_and_grad(model: nn.Module, label_smoothing: float, params, batch_stats,
                    images: jax.Array, labels: jax.Array, dropout_rng: jax.Array):
    """((mean loss, (logits, new batch_stats)), gradients) over the batch it is given."""

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_rng})
        loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
        return loss, (logits, updates["batch_stats"])

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _data_parallel_grads(model: nn.Module, mesh: Mesh, label_smoothing: float,
                         reduce_dtype: Any) -> Callable:
    """`_value_and_grad` of the global batch, computed per shard under `shard_map` and reduced
    once per gradient leaf. This is the pmap-era recipe (`check_vma=False`): the psum in
    BatchNorm's statistics transposes to a psum of cotangents, which with the final pmean of
    the per-shard gradients gives the gradient of the global mean loss."""
    axis = sharding.DATA_AXIS
    synced = model.clone(norm_axis_name=axis)

    def reduce(grad: jax.Array) -> jax.Array:
        return jax.lax.pmean(grad.astype(reduce_dtype), axis).astype(grad.dtype)

    def per_shard(params, batch_stats, images, labels, dropout_rng):
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis))
        (loss, (logits, batch_stats)), grads = _value_and_grad(
            synced, label_smoothing, params, batch_stats, images, labels, dropout_rng)
        grads = jax.tree.map(reduce, grads)
        return (jax.lax.pmean(loss, axis), (logits, batch_stats)), grads

    replicated, split = PartitionSpec(), PartitionSpec(axis)
    return jax.shard_map(per_shard, mesh=mesh,
                         in_specs=(replicated, replicated, split, split, replicated),
                         out_specs=((replicated, (split, replicated)), replicated),
                         check_vma=False)


def make_eval_step(model: nn.Module, mean: Sequence[float],
                   std: Sequence[float]) -> Callable[[TrainState, Batch], Metrics]:
    """Sums over the real examples of a padded batch (mask 1), so a split that is not a multiple
    of the batch is counted exactly once."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                             normalize(batch["image"], mean, std), train=False)
        labels, mask = batch["label"], batch["mask"]
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        return {
            "loss": jnp.sum(cross_entropy(logits, labels) * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], -1) * mask),
            "count": jnp.sum(mask),
        }

    return eval_step


def create_replicated_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                            image_shape: Sequence[int], mesh) -> TrainState:
    """The initial state, created under jit directly in its replicated layout on the mesh."""
    return jax.jit(lambda: create_train_state(model, tx, seed, image_shape),
                   out_shardings=sharding.replicated(mesh))()


def jit_on_mesh(step: Callable, mesh, *, donate_state: bool) -> Callable:
    """A train or eval step jitted over the data mesh: the state (and the outputs) replicated,
    the batch split along 'data'. The train step donates the state: it is replaced each step,
    so its buffers are reused instead of doubling the memory held."""
    replicated = sharding.replicated(mesh)
    return jax.jit(step, in_shardings=(replicated, sharding.batch_sharded(mesh)),
                   out_shardings=replicated, donate_argnums=(0,) if donate_state else ())
