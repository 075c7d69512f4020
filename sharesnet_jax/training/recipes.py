"""The paper's two training recipes, as configs built on the schema."""

from __future__ import annotations

import ml_collections

from sharesnet_jax.training.config import base_config


def cifar_recipe(model: str, dataset: str = "cifar10",
                 dropout_rate: float | None = None) -> ml_collections.ConfigDict:
    """The Wide ResNet training code's recipe (szagoruyko/wide-residual-networks train.lua and
    scripts/train_cifar.sh), which the author's CIFAR runs used: SGD + Nesterov (momentum 0.9,
    dampening 0), batch 128 on one GPU (BatchNorm over the whole batch: bn_group_size 0), lr 0.1
    x0.2 at the start of its epochs 60/120/160 (after 59/119/159 completed epochs), 200 epochs,
    weight decay 5e-4 on every parameter, a full permutation of the training set each epoch,
    flip + reflection-padded 4-pixel random crops, fixed CIFAR-10 mean/std (also for CIFAR-100).
    Not reproduced: the Torch code also resets the momentum buffer at each decay."""
    c = base_config()
    c.model, c.dataset, c.dropout_rate = model, dataset, dropout_rate
    c.eval_batch_size = 500
    return c


def imagenet_recipe(model: str) -> ml_collections.ConfigDict:
    """fb.resnet.torch's recipe (train.lua, datasets/imagenet.lua, TRAINING.md): SGD + Nesterov,
    lr 0.1 per 256 images, /10 after every 30 epochs (decay = floor((epoch - 1) / 30), 1-based),
    90 epochs, weight decay 1e-4; RandomSizedCrop to 224 + flip, colour jitter 0.4 in a random
    order, PCA lighting 0.1, bicubic resizing; evaluation scales the shorter side to 256 and
    takes the 224 centre. BatchNorm statistics per GPU: TRAINING.md trains batch 256 on 4 GPUs,
    64 per GPU (bn_group_size 64; 8 GPUs for ResNet-101/152 would be 32). The training data are
    read through a 50,000-example shuffle buffer over shuffled files rather than a full
    permutation of 1.28M examples."""
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
    c.bn_group_size = 64
    c.checkpoint_every_steps = 2_000
    return c
