"""Evaluation metrics on logits whose answers are known, and what `params_fingerprint` covers.

The eval step is given a model that returns its (normalised) input pixels as logits, so the
logits are whatever the test writes into the batch: top-1, top-5, the summed loss and the
count under the padding mask are then computed by hand (ranks and log-sum-exp in float64).
"""

from __future__ import annotations

import hashlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from sharesnet_jax.training.steps import TrainState, make_eval_step
from sharesnet_jax.training.trainer import evaluate, params_fingerprint


class _LogitsAreTheInput(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return x.reshape(x.shape[0], -1)


def _eval_step():
    return jax.jit(make_eval_step(_LogitsAreTheInput(), mean=(0.0,), std=(1.0,)))


_STATE = TrainState(step=0, params={}, batch_stats={}, opt_state=None, rng=None)


def _batch(logits: np.ndarray, labels, mask) -> dict:
    return {"image": np.asarray(logits, np.float32)[:, None, None, :],
            "label": np.asarray(labels, np.int32), "mask": np.asarray(mask, np.float32)}


def _reference(logits, labels, mask):
    logits = np.asarray(logits, np.float64)
    rank = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(-1)  # 0: the largest
    top = logits.max(-1, keepdims=True)
    log_z = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[:, 0]
    loss = log_z - logits[np.arange(len(labels)), labels]
    return {"correct": float(np.sum((rank == 0) * mask)),
            "correct_top5": float(np.sum((rank < 5) * mask)),
            "loss": float(np.sum(loss * mask)), "count": float(np.sum(mask))}


def test_top1_and_top5_on_logits_with_a_known_answer():
    # Seven classes; the label's rank in each row is 0, 2, 4, 5, 6, 0 (the last row is padding).
    logits = np.array([[9, 1, 2, 3, 4, 5, 6],
                       [1, 2, 9, 8, 7, 3, 4],
                       [7, 8, 9, 6, 5, 1, 0],
                       [7, 8, 9, 6, 5, 4, 0],
                       [1, 2, 3, 4, 5, 6, 0],
                       [0, 0, 0, 0, 0, 0, 5]], np.float32)
    labels = [0, 4, 4, 5, 6, 6]
    mask = [1, 1, 1, 1, 1, 0]
    sums = jax.device_get(_eval_step()(_STATE, _batch(logits, labels, mask)))
    assert float(sums["correct"]) == 1.0  # row 0 only; row 5 is right but masked
    assert float(sums["correct_top5"]) == 3.0  # ranks 0, 2, 4
    assert float(sums["count"]) == 5.0
    assert float(sums["loss"]) == pytest.approx(_reference(logits, labels, mask)["loss"],
                                                rel=1e-5)


@pytest.mark.parametrize("classes", [2, 3, 5, 6, 10, 37])
def test_eval_sums_equal_a_hand_computation_on_random_logits(classes):
    rng = np.random.default_rng(classes)
    step = _eval_step()
    for batch_size in (1, 7, 16):
        logits = rng.permuted(np.tile(np.arange(classes, dtype=np.float32), (batch_size, 1)),
                              axis=1) * 0.7 + rng.normal(size=(batch_size, 1))  # no ties
        labels = rng.integers(0, classes, batch_size)
        mask = (rng.uniform(size=batch_size) < 0.7).astype(np.float32)
        sums = jax.device_get(step(_STATE, _batch(logits, labels, mask)))
        expected = _reference(logits, labels, mask)
        for key in ("correct", "correct_top5", "count"):
            assert float(sums[key]) == expected[key], (classes, batch_size, key)
        assert float(sums["loss"]) == pytest.approx(expected["loss"], rel=1e-5, abs=1e-5)


def test_evaluate_divides_the_sums_of_every_batch_by_the_real_examples():
    logits = np.array([[3, 1, 0, 2, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]],
                      np.float32)
    batches = [_batch(logits, [6, 0, 0], [1, 1, 0]), _batch(logits, [5, 3, 0], [1, 1, 1])]
    metrics = evaluate(_eval_step(), _STATE, iter(batches))
    # Real examples: (row 0, label 6) rank 0; (row 1, label 0) rank 6; (row 0, label 5) rank 1;
    # (row 1, label 3) rank 3; (row 2, label 0) rank 0.
    assert metrics["eval_examples"] == 5
    assert metrics["eval_accuracy"] == pytest.approx(2 / 5)
    assert metrics["eval_top5_accuracy"] == pytest.approx(4 / 5)
    expected = sum(_reference(logits, labels, mask)["loss"]
                   for labels, mask in (([6, 0, 0], [1, 1, 0]), ([5, 3, 0], [1, 1, 1])))
    assert metrics["eval_loss"] == pytest.approx(expected / 5, rel=1e-5)


def _tree(seed: int):
    rng = np.random.default_rng(seed)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
              "head": {"bias": rng.normal(size=(5,)).astype(np.float32)}}
    stats = {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32),
                    "var": rng.uniform(size=(4,)).astype(np.float32)}}
    return params, stats


def test_params_fingerprint_is_sha256_of_parameters_and_statistics():
    params, stats = _tree(0)
    by_hand = hashlib.sha256()
    for leaf in (params["conv"]["kernel"], params["head"]["bias"], stats["bn"]["mean"],
                 stats["bn"]["var"]):  # tree order: sorted keys, params first
        by_hand.update(leaf.tobytes())
    assert params_fingerprint(params, stats) == by_hand.hexdigest()
    # One running variance nudged by one ulp changes it; so does one parameter.
    nudged = {"bn": {"mean": stats["bn"]["mean"],
                     "var": np.nextafter(stats["bn"]["var"], np.float32(2.0))}}
    assert params_fingerprint(params, nudged) != params_fingerprint(params, stats)
    other_params = {**params, "head": {"bias": params["head"]["bias"] + 1}}
    assert params_fingerprint(other_params, stats) != params_fingerprint(params, stats)
