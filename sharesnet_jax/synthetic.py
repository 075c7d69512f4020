"""Synthetic data generated on the device: measures the model and the step, not the input
pipeline, and needs no TensorFlow."""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sharesnet_jax.dataset_info import DatasetInfo
from sharesnet_jax.sharding import batch_sharded

NAME = "synthetic"


def synthetic_info(image_size: int, num_classes: int, num_train_examples: int = 50_000,
                   num_eval_examples: int = 1_000) -> DatasetInfo:
    return DatasetInfo(name=NAME, num_classes=num_classes, image_shape=(image_size, image_size, 3),
                       num_train_examples=num_train_examples, num_eval_examples=num_eval_examples,
                       mean=(127.5,) * 3, std=(64.0,) * 3, augment="none",
                       class_names=tuple(str(i) for i in range(num_classes)))


def synthetic_batch(info: DatasetInfo, mesh: Mesh, global_batch_size: int,
                    seed: int = 0) -> dict[str, jax.Array]:
    """One random uint8 batch, created already sharded over the mesh (never on the host)."""

    def make(key):
        image_key, label_key = jax.random.split(key)
        shape = (global_batch_size, *info.image_shape)
        return {
            "image": jax.random.randint(image_key, shape, 0, 256, jnp.int32).astype(jnp.uint8),
            "label": jax.random.randint(label_key, (global_batch_size,), 0, info.num_classes,
                                        jnp.int32),
            "mask": jnp.ones((global_batch_size,), jnp.float32),
        }

    return jax.jit(make, out_shardings=batch_sharded(mesh))(jax.random.PRNGKey(seed))


def synthetic_batches(info: DatasetInfo, mesh: Mesh, global_batch_size: int,
                      seed: int = 0) -> Iterator[dict[str, jax.Array]]:
    """The same device-resident batch forever: generating fresh noise would time the RNG."""
    batch = synthetic_batch(info, mesh, global_batch_size, seed)
    while True:
        yield batch
