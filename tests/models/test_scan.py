"""stage_impl='scan' and every remat_policy compute what the plain loop computes; the layouts interchange;
the scan model's OWN initialisation gives every scanned block its own weights, drawn like the
loop's; each remat_policy really puts its rematerialisation into the gradient.

Gradients through a scan of convolutions compile and run slowly on XLA:CPU, so the networks here
are tiny (two stages of 3 and 2 blocks, width 4, batch 2, 8x8 or 16x16 images) and every jitted
step is compiled once, with XLA's backend optimisations off (they cost more compile time than
they save at this size and do not change what is computed). The default run covers the whole
family x share matrix under both impls.
"""

import functools
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharesnet_jax.models import PreActBasic, Stage, create_model
from sharesnet_jax.models.layers import make_conv, make_norm
from sharesnet_jax.models.stage import SCANNED_BLOCKS
from sharesnet_jax.models.stage_layout import (
    convert_stage_layout, to_loop_layout, to_scan_layout,
)
from sharesnet_jax.models.stats import abstract_variables, count_params

# family: (registry name, field overrides, image side)
SMALL = {
    "cifar_bottleneck": ("cifar_sharesnet164", dict(stage_sizes=(3, 2), stage_features=(4, 4)), 8),
    "cifar_basic": ("sharewrn16_4", dict(stage_sizes=(3, 2), stage_features=(4, 4)), 8),
    "imagenet_basic": ("sharesnet18", dict(stage_sizes=(3, 2), stage_features=(4, 4)), 16),
    "imagenet_bottleneck": ("sharesnet50", dict(stage_sizes=(3, 2), stage_features=(4, 4)), 16),
}
NUM_CLASSES = 5
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _model(family, share, **fields):
    name, small_fields, _ = SMALL[family]
    return create_model(name, num_classes=NUM_CLASSES, share=share, **{**small_fields, **fields})


def _batch(family):
    side = SMALL[family][2]
    images = jax.random.normal(jax.random.key(1), (2, side, side, 3))
    return images, jnp.arange(2) % NUM_CLASSES


@functools.cache
def _loop_variables(family, share):
    images, _ = _batch(family)
    return _model(family, share).init(jax.random.key(0), images, train=False)


@functools.cache
def _compiled_step(family, share, impl, remat_policy, dropout):
    """A jitted train-step-like function: train loss, logits, BN updates, grads; eval logits."""
    fields = dict(stage_impl=impl, remat_policy=remat_policy)
    if dropout:
        fields["dropout_rate"] = dropout
    model = _model(family, share, **fields)
    images, labels = _batch(family)

    def step(variables, rng):
        def loss(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": rng})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (
                logits, updates["batch_stats"])

        (value, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(
            variables["params"])
        return dict(loss=value, logits=logits, batch_stats=stats, grads=grads,
                    eval_logits=model.apply(variables, images, train=False))

    return jax.jit(step, compiler_options=QUICK_COMPILE)


@functools.cache
def _results(family, share, impl, remat_policy="none", dropout=0.0, seed=0):
    """The step's outputs on the loop model's initial variables, all in the LOOP layout."""
    variables = _loop_variables(family, share)
    if impl == "scan":
        variables = to_scan_layout(variables)
    out = _compiled_step(family, share, impl, remat_policy, dropout)(variables,
                                                                     jax.random.key(seed))
    return jax.tree.map(np.asarray, to_loop_layout(out))


def _assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def _assert_scan_equals_loop(family, share):
    loop, scan = _results(family, share, "loop"), _results(family, share, "scan")
    # atol 1e-5: a few gradient entries near 1e-2 differ by ~1e-6 (summation order) in
    # imagenet_bottleneck/'all'.
    _assert_trees_close(scan, loop, atol=1e-5)


@pytest.mark.parametrize("share", ["none", "paper", "all"])
@pytest.mark.parametrize("family", sorted(SMALL))
def test_scan_equals_loop_outputs_statistics_and_gradients(family, share):
    # cifar_basic/'all' shares the strided conv1 of stage 2's first block and both tail 3x3s;
    # 'none' broadcasts nothing into the scan.
    _assert_scan_equals_loop(family, share)


def _kernels(tree):
    """{path: array} of every conv kernel (4-D) of a params tree."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
    return {path: np.asarray(leaf) for path, leaf in flat.items()
            if path.endswith("kernel") and np.ndim(leaf) >= 4}


@pytest.mark.parametrize("family", ["cifar_basic", "imagenet_bottleneck"])
def test_scan_models_own_init_gives_each_block_its_own_weights_drawn_like_the_loops(family):
    """Not via to_scan_layout: the scan model initialises itself. Wider than the other tests
    (16 channels) so a kernel's standard deviation is measured to a few percent."""
    side = SMALL[family][2]
    wide = dict(stage_features=(16, 16))
    images = jnp.zeros((1, side, side, 3))
    scan_params = _model(family, "paper", stage_impl="scan", **wide).init(
        jax.random.key(0), images, train=False)["params"]
    loop_params = _model(family, "paper", **wide).init(
        jax.random.key(0), images, train=False)["params"]
    tail = _kernels(scan_params["stage1"][SCANNED_BLOCKS])
    assert tail, "the scanned tail owns conv kernels"
    for path, stacked in tail.items():
        assert stacked.shape[0] == 2, path  # blocks 2 and 3
        assert not np.allclose(stacked[0], stacked[1]), f"blocks 2 and 3 share {path} at init"
    scan_kernels = _kernels(to_loop_layout({"params": scan_params})["params"])
    loop_kernels = _kernels(loop_params)
    assert scan_kernels.keys() == loop_kernels.keys()
    for path, kernel in scan_kernels.items():
        other = loop_kernels[path]
        assert abs(float(kernel.mean())) < 4 * float(other.std()) / np.sqrt(kernel.size), path
        assert 0.85 < float(kernel.std()) / float(other.std()) < 1.18, path
    # every block of the loop layout differs from every other (no two blocks drawn alike)
    blocks = [k for p, k in scan_kernels.items() if p.startswith("stage1/")]
    for i in range(len(blocks)):
        for j in range(i):
            assert blocks[i].shape != blocks[j].shape or not np.allclose(blocks[i], blocks[j])


def _gradient_jaxpr(impl, remat_policy):
    model = _model("cifar_basic", "paper", stage_impl=impl, remat_policy=remat_policy)
    images, labels = _batch("cifar_basic")
    variables = _loop_variables("cifar_basic", "paper")
    if impl == "scan":
        variables = to_scan_layout(variables)

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))


def _count(pattern: str, jaxpr: str) -> int:
    return len(re.findall(pattern, jaxpr))


@pytest.mark.parametrize("impl", ["loop", "scan"])
def test_each_remat_policy_recomputes_what_it_says(impl):
    """Equal outputs alone cannot tell the policies apart; the gradient's program can. A
    pre-activation basic block normalises the output of its first 3x3 conv (bn2), so its
    backward pass needs that output: 'full' recomputes that conv, 'conv_outputs' keeps it and
    recomputes only the BatchNorms (one more rsqrt each), 'none' recomputes nothing."""
    conv, rsqrt = r"conv_general_dilated\[", r"\brsqrt\b"
    none, convs, full = (_gradient_jaxpr(impl, p) for p in ("none", "conv_outputs", "full"))
    checkpoint = r"\b(checkpoint|remat\d*)\["
    assert not re.search(checkpoint, none)
    assert re.search(checkpoint, convs) and re.search(checkpoint, full)
    # stage_sizes (3, 2): five blocks; under scan each stage traces block 1 and one body.
    blocks = 4 if impl == "scan" else 5
    assert _count(conv, convs) == _count(conv, none)
    assert _count(conv, full) == _count(conv, none) + blocks
    assert _count(rsqrt, convs) == _count(rsqrt, full) == _count(rsqrt, none) + 2 * blocks


@pytest.mark.parametrize("impl", ["loop", "scan"])
@pytest.mark.parametrize("policy", ["conv_outputs", "full"])
def test_remat_changes_nothing_but_memory(impl, policy):
    # Dropout on: remat must replay the same masks in the backward pass.
    plain = _results("cifar_basic", "paper", impl, dropout=0.3)
    remat = _results("cifar_basic", "paper", impl, remat_policy=policy, dropout=0.3)
    _assert_trees_close(remat, plain)


def test_scan_dropout_is_per_call_random_and_off_at_eval():
    first = _results("cifar_basic", "paper", "scan", dropout=0.3, seed=0)
    again = _compiled_step("cifar_basic", "paper", "scan", "none", 0.3)(
        to_scan_layout(_loop_variables("cifar_basic", "paper")), jax.random.key(0))
    other = _results("cifar_basic", "paper", "scan", dropout=0.3, seed=1)
    np.testing.assert_array_equal(first["logits"], np.asarray(again["logits"]))
    assert not np.allclose(first["logits"], other["logits"])
    np.testing.assert_array_equal(first["eval_logits"], other["eval_logits"])
    no_dropout = _results("cifar_basic", "paper", "scan")
    np.testing.assert_allclose(first["eval_logits"], no_dropout["eval_logits"], rtol=1e-6)
    assert not np.allclose(first["logits"], no_dropout["logits"])


class _MaskBlock(PreActBasic):
    """Adds its dropout keep-mask to the signal and sows it, so each block's mask can be read."""

    @nn.compact
    def __call__(self, x, train, shared_kernel=None):
        keep = nn.Dropout(0.5, deterministic=not train)(jnp.ones_like(x))
        self.sow("intermediates", "keep", keep)
        return x + keep + 0 * self.conv3x3(x, "conv2", 1, shared_kernel)


@pytest.mark.parametrize("remat_policy", ["none", "full"])
def test_every_scanned_block_draws_its_own_dropout_mask(remat_policy):
    stage = Stage(block=_MaskBlock, num_blocks=4, features=2, strides=1, share="paper",
                  conv=make_conv(jnp.float32, jnp.float32),
                  norm=make_norm(True, jnp.float32, jnp.float32), stage_impl="scan",
                  remat_policy=remat_policy)
    x = jnp.zeros((1, 8, 8, 2))
    variables = {"params": stage.init(jax.random.key(0), x, train=False)["params"]}
    # block 1 owns its 3x3; blocks 2..4 apply the broadcast shared kernel and own no params
    assert set(variables["params"]) == {"block1", "shared_conv3x3"}
    _, sown = stage.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                          mutable=["intermediates"])
    (tail,) = sown["intermediates"][SCANNED_BLOCKS]["keep"]  # blocks 2..4, stacked
    (first,) = sown["intermediates"]["block1"]["keep"]
    masks = [np.asarray(first)] + [np.asarray(m) for m in tail]
    assert len(masks) == 4 and all(set(np.unique(m)) == {0.0, 2.0} for m in masks)
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(masks[i], masks[j]), (i, j)


@pytest.mark.parametrize("share", ["none", "paper", "all"])
@pytest.mark.parametrize("family", sorted(SMALL))
def test_scan_layout_matches_the_scan_model_and_round_trips(family, share):
    side = SMALL[family][2]
    loop_model = _model(family, share)
    scan_model = _model(family, share, stage_impl="scan")
    loop_abstract = abstract_variables(loop_model, (side, side, 3))
    scan_abstract = abstract_variables(scan_model, (side, side, 3))
    converted = to_scan_layout(loop_abstract)
    shapes = lambda tree: jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), tree)  # noqa: E731
    assert shapes(converted) == shapes(scan_abstract)
    assert shapes(to_loop_layout(scan_abstract)) == shapes(loop_abstract)
    assert count_params(scan_abstract["params"]) == count_params(loop_abstract["params"])
    stage1 = scan_abstract["params"]["stage1"]
    assert set(stage1) - {"shared_conv3x3"} == {"block1", SCANNED_BLOCKS}
    assert ("shared_conv3x3" in stage1) == (share != "none")
    assert jax.tree.leaves(stage1[SCANNED_BLOCKS])[0].shape[0] == 2  # blocks 2 and 3


def test_round_trip_is_the_identity_on_values_and_already_converted_trees_pass_through():
    variables = _loop_variables("imagenet_bottleneck", "paper")
    scan = to_scan_layout(variables)
    tail = scan["params"]["stage1"][SCANNED_BLOCKS]["conv1"]["kernel"]
    block3 = variables["params"]["stage1"]["block3"]
    np.testing.assert_array_equal(tail[1], block3["conv1"]["kernel"])
    back = to_loop_layout(scan)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    assert jax.tree.structure(to_scan_layout(scan)) == jax.tree.structure(scan)
    assert jax.tree.structure(to_loop_layout(variables)) == jax.tree.structure(variables)
    frozen = to_scan_layout(flax.core.freeze(variables))
    assert isinstance(frozen, flax.core.FrozenDict) and SCANNED_BLOCKS in frozen["params"]["stage1"]
    numpy_tree = to_scan_layout(jax.tree.map(np.asarray, variables))
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(numpy_tree))
    with pytest.raises(ValueError, match=r"to='scanned' is not one of 'loop', 'scan'"):
        convert_stage_layout(variables, to="scanned")


def test_optimizer_state_converts_like_the_params():
    loop_params = _loop_variables("cifar_bottleneck", "paper")["params"]
    optimizer = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9,
                                                                       nesterov=True))
    loop_state = optimizer.init(loop_params)
    loop_state = jax.tree.map(lambda m: m + 1.0, loop_state)  # non-trivial moments
    scan_state = to_scan_layout(loop_state)
    expected = optimizer.init(to_scan_layout(loop_params))
    assert jax.tree.structure(scan_state) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, to_loop_layout(scan_state), loop_state)


def test_paper_networks_keep_their_exact_counts_under_scan():
    for name, classes, expected in (("cifar_sharesnet164", 10, 929_114),
                                    ("sharesnet50", 1000, 20_469_800)):
        variables = abstract_variables(create_model(name, num_classes=classes, stage_impl="scan",
                                                    remat_policy="full"))
        assert count_params(variables["params"]) == expected, name
        assert SCANNED_BLOCKS in variables["params"]["stage2"]


def test_stage_impl_is_validated_and_reachable_through_create_model():
    # What the fields do, not what they hold: create_model's scan model builds scanned stages,
    # its default builds the loop.
    scanned = abstract_variables(create_model("sharesnet18", num_classes=10, stage_impl="scan",
                                              remat_policy="full"))
    assert SCANNED_BLOCKS in scanned["params"]["stage1"]
    looped = abstract_variables(create_model("cifar_resnet20", num_classes=10))
    assert SCANNED_BLOCKS not in looped["params"]["stage1"]
    assert {"block1", "block2", "block3"} <= set(looped["params"]["stage1"])
    with pytest.raises(ValueError, match=r"^stage_impl='unrolled' is not one of 'loop', 'scan'"):
        abstract_variables(create_model("resnet18", num_classes=10, stage_impl="unrolled"))
    with pytest.raises(ValueError, match=r"^stage_impl='Scan' is not one of 'loop', 'scan'"):
        abstract_variables(create_model("cifar_resnet20", num_classes=10, stage_impl="Scan"))
