"""Small configs shared by the trainer tests: tiny models, few steps, everything offline."""

import pathlib

import ml_collections

from sharesnet_jax.training.config import base_config

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository


def tiny_config(**fields) -> ml_collections.ConfigDict:
    c = base_config()
    c.model = "cifar_sharesnet20"  # n=3: each shared kernel has two uses
    c.dataset = "digits"
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 4
    c.learning_rate, c.learning_rate_batch_size = 0.05, 32
    c.schedule = "constant"
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.shuffle_buffer = 2048
    for key, value in fields.items():
        c[key] = value
    return c
