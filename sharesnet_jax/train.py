"""`train_and_evaluate(config, workdir)`, the trainer's entry point for notebooks and scripts;
it lives in `sharesnet_jax.training.trainer`."""

from sharesnet_jax.training.trainer import train_and_evaluate

__all__ = ["train_and_evaluate"]
