"""Synthetic data generated on the device: measures the model and the step, not the input
pipeline, and needs no TensorFlow."""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Sharding

from sharesnet_jax.data.info import KNOWN_TRAIN_EXAMPLES, DatasetInfo

NAME = "synthetic"
# A CIFAR-sized epoch, so that epoch-based step counts stay meaningful.
NUM_TRAIN_EXAMPLES = KNOWN_TRAIN_EXAMPLES["cifar10"]


def synthetic_info(image_size: int, num_classes: int,
                   num_train_examples: int = NUM_TRAIN_EXAMPLES,
                   num_eval_examples: int = 1_000) -> DatasetInfo:
    """A CIFAR-sized epoch by default, so that epoch-based step counts stay meaningful."""
    return DatasetInfo(name=NAME, num_classes=num_classes, image_shape=(image_size, image_size, 3),
                       num_train_examples=num_train_examples, num_eval_examples=num_eval_examples,
                       mean=(127.5,) * 3, std=(64.0,) * 3, augment="none",
                       class_names=tuple(str(i) for i in range(num_classes)))


def synthetic_batch(info: DatasetInfo, sharding: Sharding, global_batch_size: int,
                    seed: int = 0) -> dict[str, jax.Array]:
    """One random uint8 batch, created already split over the devices as `sharding` says (never
    on the host)."""

    def make(key):
        image_key, label_key = jax.random.split(key)
        shape = (global_batch_size, *info.image_shape)
        return {
            "image": jax.random.randint(image_key, shape, 0, 256, jnp.int32).astype(jnp.uint8),
            "label": jax.random.randint(label_key, (global_batch_size,), 0, info.num_classes,
                                        jnp.int32),
            "mask": jnp.ones((global_batch_size,), jnp.float32),
        }

    return jax.jit(make, out_shardings=sharding)(jax.random.PRNGKey(seed))


def synthetic_batches(info: DatasetInfo, sharding: Sharding, global_batch_size: int,
                      seed: int = 0) -> Iterator[dict[str, jax.Array]]:
    """The same device-resident batch forever: generating fresh noise would time the RNG."""
    batch = synthetic_batch(info, sharding, global_batch_size, seed)
    while True:
        yield batch
