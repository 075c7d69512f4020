"""BatchNorm: Torch's settings (momentum 0.9 in Flax's convention, eps 1e-5) and statistics over
groups of examples (`bn_group_size`), against a hand computation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharesnet_jax.models import create_model
from sharesnet_jax.models.layers import make_norm


def _hand_batchnorm(x, scale, bias, group_size, mean, var, momentum=0.9, eps=1e-5):
    """Per group of `group_size` consecutive examples: normalise by the group's mean and biased
    variance; the running averages move towards the mean of the groups' statistics."""
    groups = x.reshape(-1, group_size, *x.shape[1:]).astype(np.float64)
    axes = tuple(range(1, groups.ndim - 1))
    group_mean = groups.mean(axes, keepdims=True)
    group_var = groups.var(axes, keepdims=True)
    y = ((groups - group_mean) / np.sqrt(group_var + eps)).reshape(x.shape) * scale + bias
    new_mean = momentum * mean + (1 - momentum) * group_mean.reshape(-1, x.shape[-1]).mean(0)
    new_var = momentum * var + (1 - momentum) * group_var.reshape(-1, x.shape[-1]).mean(0)
    return y, new_mean, new_var


@pytest.mark.parametrize("group_size", [0, 2, 4])
def test_training_statistics_and_running_averages_equal_a_hand_computation(group_size):
    x = np.asarray(jax.random.normal(jax.random.key(0), (8, 5, 5, 3)) * 3 + 1)
    norm = make_norm(True, jnp.float32, jnp.float32, group_size=group_size)()
    variables = norm.init(jax.random.key(1), x)
    scale = np.array([0.5, 1.0, 2.0], np.float32)
    bias = np.array([0.0, -1.0, 0.25], np.float32)
    stats = {"mean": np.array([0.1, 0.2, 0.3]), "var": np.array([1.0, 2.0, 0.5])}
    variables = {"params": {"scale": scale, "bias": bias},
                 "batch_stats": {k: v.astype(np.float32) for k, v in stats.items()}}
    y, updates = norm.apply(variables, x, mutable=["batch_stats"])
    expected_y, expected_mean, expected_var = _hand_batchnorm(
        x, scale, bias, group_size or len(x), stats["mean"], stats["var"])
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], expected_mean, rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"], expected_var, rtol=1e-4)
    # Evaluation normalises by the running averages.
    evaluated = make_norm(False, jnp.float32, jnp.float32, group_size=group_size)().apply(
        variables, x)
    np.testing.assert_allclose(evaluated, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
                               * scale + bias, rtol=1e-4, atol=1e-4)


def test_a_model_with_groups_keeps_the_variables_of_plain_batchnorm():
    images = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
    build = functools.partial(create_model, "cifar_sharesnet8", num_classes=5)
    plain, grouped = build(), build(bn_group_size=2)
    variables = plain.init(jax.random.key(0), images, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        grouped.init(jax.random.key(0), images, train=False))
    same, _ = grouped.clone(bn_group_size=4).apply(variables, images, train=True,
                                                   mutable=["batch_stats"])
    whole, _ = plain.apply(variables, images, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(same, whole, rtol=1e-4, atol=1e-4)  # one group = whole batch
    split, _ = grouped.apply(variables, images, train=True, mutable=["batch_stats"])
    assert not np.allclose(split, whole, atol=1e-3)
    with pytest.raises(ValueError, match="bn_group_size=3 does not divide the batch of 4"):
        build(bn_group_size=3).apply(variables, images, train=True, mutable=["batch_stats"])
