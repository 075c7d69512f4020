"""Optimizers and learning-rate schedules of the paper's recipes, as optax transformations."""

from __future__ import annotations

import optax

from sharesnet_jax.errors import UserError, not_one_of

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("steps", "cosine", "constant")


def scaled_learning_rate(config) -> float:
    """The peak rate for this global batch: `learning_rate` is given for `learning_rate_batch_size`
    examples and scales linearly with the batch, as in Goyal et al. (2017)."""
    reference = config.learning_rate_batch_size or config.batch_size
    return config.learning_rate * config.batch_size / reference


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    peak = scaled_learning_rate(config)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    name = config.schedule
    if name == "steps":
        boundaries = {
            int(round(epoch * steps_per_epoch)) - warmup_steps: config.lr_decay_factor
            for epoch in config.lr_decay_epochs
        }
        main = optax.piecewise_constant_schedule(peak, {b: f for b, f in boundaries.items() if b > 0})
    elif name == "cosine":
        main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    elif name == "constant":
        main = optax.constant_schedule(peak)
    else:
        raise UserError(not_one_of("schedule", name, SCHEDULES))
    if warmup_steps <= 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD applies weight decay the way Torch did for the paper: added to the gradient of every
    parameter before momentum, so the shared kernel is decayed once, as one tensor."""
    name = config.optimizer
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
        )
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    raise UserError(not_one_of("optimizer", name, OPTIMIZERS))
