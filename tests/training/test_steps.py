"""The train step's BatchNorm behaviour against a hand computation: after each step every
BatchNorm's running mean and variance are 0.9 x the previous ones + 0.1 x the batch's (biased)
statistics, the normalisation uses eps 1e-5, and the next step starts from the updated ones."""

import flax.linen as nn
import jax
import numpy as np
import optax

from sharesnet_jax.models import create_model
from sharesnet_jax.training.steps import create_train_state, make_train_step, normalize

MEAN, STD = (120.0, 110.0, 100.0), (60.0, 50.0, 70.0)
MOMENTUM, EPSILON = 0.9, 1e-5  # Torch's running-average factor 0.1 and eps, as the paper used


def _batch(seed):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, (8,), dtype=np.int32)}


def _batchnorm_calls(model, state, batch):
    """{module path: (input, output)} of every BatchNorm in one training-mode forward pass."""
    calls = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            calls["/".join(context.module.scope.path)] = (np.asarray(args[0], np.float64),
                                                           np.asarray(out, np.float64))
        return out

    with nn.intercept_methods(record):
        model.apply({"params": state.params, "batch_stats": state.batch_stats},
                    normalize(batch["image"], MEAN, STD), train=True, mutable=["batch_stats"])
    return calls


def _lookup(tree, path):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _check_step(model, step, state, batch):
    calls = _batchnorm_calls(model, state, batch)
    assert len(calls) == 2 * 3 + 1  # ResNet-8: two BNs in each of 3 blocks, then final_bn
    assert 2 * len(calls) == len(jax.tree.leaves(state.batch_stats))  # every BN is checked
    new_state, _ = step(state, batch)
    for path, (x, y) in calls.items():
        old = _lookup(state.batch_stats, path)
        new = _lookup(new_state.batch_stats, path)
        params = _lookup(state.params, path)
        mean = x.mean(axis=(0, 1, 2))
        var = x.var(axis=(0, 1, 2))  # biased: the statistic Flax normalises with AND averages
        np.testing.assert_allclose(new["mean"], MOMENTUM * np.asarray(old["mean"])
                                   + (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6, err_msg=path)
        np.testing.assert_allclose(new["var"], MOMENTUM * np.asarray(old["var"])
                                   + (1 - MOMENTUM) * var, rtol=1e-5, atol=1e-6, err_msg=path)
        expected = ((x - mean) / np.sqrt(var + EPSILON) * np.asarray(params["scale"])
                    + np.asarray(params["bias"]))
        np.testing.assert_allclose(y, expected, rtol=2e-5, atol=2e-5, err_msg=path)
    return new_state


def test_batchnorm_statistics_after_each_train_step_match_a_hand_computation():
    model = create_model("cifar_sharesnet8", num_classes=10, stage_features=(4, 4, 4))
    tx = optax.sgd(0.1, momentum=0.9)
    step = jax.jit(make_train_step(model, tx, optax.constant_schedule(0.1), MEAN, STD))
    state = create_train_state(model, tx, 0, (8, 8, 3))
    # The stem conv's output is small (He init over 3 input channels, normalised pixels): the
    # eps of the first BatchNorm matters. Scale it so that var ~ 1e-2 makes eps 1e-3 visible.
    state = state.replace(params=jax.tree_util.tree_map_with_path(
        lambda path, p: p * 0.1 if "stem" in jax.tree_util.keystr(path) else p, state.params))
    first = _check_step(model, step, state, _batch(0))
    # The second step starts from the statistics the first one stored, not the initial ones.
    initial_means = jax.tree.leaves(state.batch_stats)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(first.batch_stats),
                                                     initial_means))
    _check_step(model, step, first, _batch(1))
