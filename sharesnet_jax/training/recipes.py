"""The paper's two training recipes, as configs built on the schema."""

from __future__ import annotations

import ml_collections

from sharesnet_jax.training.config import base_config


def cifar_recipe(model: str, dataset: str = "cifar10",
                 dropout_rate: float | None = None) -> ml_collections.ConfigDict:
    """The Wide ResNet training code's recipe, which the paper's CIFAR numbers came from:
    SGD+Nesterov, batch 128, lr 0.1 x0.2 at epochs 60/120/160, 200 epochs, wd 5e-4."""
    c = base_config()
    c.model, c.dataset, c.dropout_rate = model, dataset, dropout_rate
    c.eval_batch_size = 500
    return c


def imagenet_recipe(model: str) -> ml_collections.ConfigDict:
    """fb.resnet.torch's recipe: SGD+Nesterov, lr 0.1 per 256 images, /10 every 30 epochs,
    90 epochs, wd 1e-4, random-resized crops at 224 + flip, colour jitter 0.4, PCA lighting 0.1."""
    c = base_config()
    c.model, c.dataset = model, "imagenet2012"
    c.batch_size = 256
    c.eval_batch_size = 250
    c.learning_rate, c.learning_rate_batch_size = 0.1, 256
    c.weight_decay = 1e-4
    c.lr_decay_epochs, c.lr_decay_factor = (30, 60), 0.1
    c.num_epochs = 90.0
    c.shuffle_buffer = 50_000
    c.color_jitter, c.pca_lighting = 0.4, 0.1
    c.checkpoint_every_steps = 2_000
    return c
