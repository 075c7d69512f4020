"""The learning rate at each milestone step and the optimizer's updates, against hand
computations: the rate written out per step (linear scaling, warmup, the decay steps of each
recipe), Torch's SGD (weight decay added to the gradient, momentum with dampening 0, Nesterov)
transcribed in numpy, and optax's own `adamw` for AdamW."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharesnet_jax.training import optim
from sharesnet_jax.training.config import base_config
from sharesnet_jax.training.recipes import cifar_recipe, imagenet_recipe


def _config(**fields):
    c = base_config()
    for key, value in fields.items():
        c[key] = value
    return c


def _rates(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_learning_rate_scales_linearly_with_the_global_batch():
    for batch, reference, expected in ((256, 128, 0.2), (64, 128, 0.05), (1024, 256, 0.4),
                                       (96, 0, 0.1)):
        c = _config(learning_rate=0.1, batch_size=batch, learning_rate_batch_size=reference)
        assert optim.scaled_learning_rate(c) == pytest.approx(expected)
        schedule = optim.learning_rate_schedule(_config(
            learning_rate=0.1, batch_size=batch, learning_rate_batch_size=reference,
            schedule="constant"), 10, 100)
        assert float(schedule(37)) == pytest.approx(expected)


@pytest.mark.parametrize("steps_per_epoch", [7, 10, 391])
def test_steps_schedule_decays_after_the_completed_epochs(steps_per_epoch):
    """The CIFAR recipe: x0.2 once 59, 119 and 159 epochs are completed (the Torch code's
    1-based epochs 60, 120, 160). `schedule(s)` is the rate of the step after s completed."""
    c = cifar_recipe("cifar_sharesnet20")
    assert tuple(c.lr_decay_epochs) == (59, 119, 159) and c.lr_decay_factor == 0.2
    spe = steps_per_epoch
    schedule = optim.learning_rate_schedule(c, spe, 200 * spe)
    peak = 0.1
    for epoch, factor in ((59, 0.2), (119, 0.04), (159, 0.008)):
        before, at = _rates(schedule, [epoch * spe - 1, epoch * spe])
        assert before == pytest.approx(peak * factor / 0.2, rel=1e-6), epoch
        assert at == pytest.approx(peak * factor, rel=1e-6), epoch
    assert float(schedule(0)) == pytest.approx(peak)
    assert float(schedule(200 * spe - 1)) == pytest.approx(0.1 * 0.2 ** 3, rel=1e-6)


def test_imagenet_recipe_divides_by_10_after_epochs_30_and_60_of_90():
    c = imagenet_recipe("sharesnet50")
    assert (c.learning_rate, c.learning_rate_batch_size, c.batch_size) == (0.1, 256, 256)
    assert c.num_epochs == 90.0 and c.schedule == "steps" and c.warmup_epochs == 0.0
    spe = 5004  # 1,281,167 // 256
    schedule = optim.learning_rate_schedule(c, spe, 90 * spe)
    expected = {0: 0.1, 30 * spe - 1: 0.1, 30 * spe: 0.01, 60 * spe - 1: 0.01,
                60 * spe: 0.001, 90 * spe - 1: 0.001}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-6), step


def test_warmup_rises_linearly_from_zero_then_the_decays_keep_their_epochs():
    spe, warmup_epochs = 7, 2.0
    c = _config(learning_rate=0.1, batch_size=256, learning_rate_batch_size=128,
                warmup_epochs=warmup_epochs, lr_decay_epochs=(5, 8), lr_decay_factor=0.5)
    schedule = optim.learning_rate_schedule(c, spe, 10 * spe)
    peak, warmup = 0.2, 14
    for step in range(warmup + 1):
        assert float(schedule(step)) == pytest.approx(peak * step / warmup, abs=1e-7), step
    assert float(schedule(5 * spe - 1)) == pytest.approx(peak)
    assert float(schedule(5 * spe)) == pytest.approx(peak * 0.5)
    assert float(schedule(8 * spe - 1)) == pytest.approx(peak * 0.5)
    assert float(schedule(8 * spe)) == pytest.approx(peak * 0.25)


@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_cosine_schedule_after_warmup_reaches_zero_at_the_last_step(warmup_epochs):
    spe, total = 10, 95
    c = _config(learning_rate=0.2, batch_size=128, learning_rate_batch_size=128,
                schedule="cosine", warmup_epochs=warmup_epochs)
    schedule = optim.learning_rate_schedule(c, spe, total)
    warmup = int(warmup_epochs * spe)
    for step in (warmup, warmup + 1, 30, 50, 77, total - 1, total):
        expected = 0.1 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) * 1.0
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6), step
    if warmup:
        assert float(schedule(warmup // 2)) == pytest.approx(0.2 * (warmup // 2) / warmup)


def _torch_sgd(params, grads_per_step, rates, momentum, weight_decay, nesterov):
    """torch.optim.SGD.step (dampening 0) in numpy: d = g + wd p; buf = d (first step), else
    buf = momentum buf + d; d = d + momentum buf if nesterov else buf; p -= lr d."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buffers = {}
    for grads, lr in zip(grads_per_step, rates):
        for name, p in params.items():
            d = np.asarray(grads[name], np.float64) + weight_decay * p
            buffers[name] = d if name not in buffers else momentum * buffers[name] + d
            d = d + momentum * buffers[name] if nesterov else buffers[name]
            params[name] = p - lr * d
    return params


@pytest.mark.parametrize("nesterov,momentum,weight_decay", [
    (True, 0.9, 5e-4), (False, 0.9, 5e-4), (True, 0.8, 1e-1), (False, 0.5, 0.0)])
def test_sgd_updates_equal_torchs_sgd_with_weight_decay_and_nesterov(nesterov, momentum,
                                                                   weight_decay):
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(3, 3, 2, 2)), "bias": rng.normal(size=(2,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(4)]
    c = _config(optimizer="sgd", learning_rate=0.1, learning_rate_batch_size=128, batch_size=128,
                momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                lr_decay_epochs=(2,), lr_decay_factor=0.1)
    schedule = optim.learning_rate_schedule(c, 1, 4)
    tx = optim.create_optimizer(c, schedule)
    ours = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(jax.tree.map(jnp.float32, g), state, ours)
        ours = optax.apply_updates(ours, updates)
    expected = _torch_sgd(params, grads, [0.1, 0.1, 0.01, 0.01], momentum, weight_decay,
                          nesterov)
    for name in params:
        np.testing.assert_allclose(np.asarray(ours[name]), expected[name], rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_adamw_updates_equal_optax_adamw():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    c = _config(optimizer="adamw", learning_rate=1e-2, learning_rate_batch_size=128,
                batch_size=128, weight_decay=0.3, schedule="constant")
    tx = optim.create_optimizer(c, optim.learning_rate_schedule(c, 10, 10))
    reference = optax.adamw(1e-2, weight_decay=0.3)
    ours, theirs = params, params
    ours_state, theirs_state = tx.init(params), reference.init(params)
    for _ in range(3):
        g = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
        u, ours_state = tx.update(g, ours_state, ours)
        ours = optax.apply_updates(ours, u)
        v, theirs_state = reference.update(g, theirs_state, theirs)
        theirs = optax.apply_updates(theirs, v)
    np.testing.assert_allclose(np.asarray(ours["w"]), np.asarray(theirs["w"]), rtol=1e-6)
    assert not np.allclose(np.asarray(ours["w"]), np.asarray(params["w"]))
