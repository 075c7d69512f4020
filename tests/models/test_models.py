"""The model zoo: the paper's exact counts, the sharing rule, and sharing's semantics."""


import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharesnet_jax import params as params_cli
from sharesnet_jax.models import create_model, list_models
from sharesnet_jax.models.stats import (
    abstract_variables, count_params, count_stage_conv3x3_kernels, forward_macs,
)


@pytest.mark.parametrize("row", params_cli.PAPER_ROWS, ids=lambda r: r.label)
def test_exact_parameter_counts_of_the_paper(row):
    for name, expected in ((row.plain, row.plain_params), (row.shared, row.shared_params)):
        variables = abstract_variables(create_model(name, num_classes=row.num_classes))
        assert count_params(variables["params"]) == expected, name


@pytest.mark.parametrize("name,expected", [
    ("sharesnet50", 7), ("sharesnet101", 7), ("sharesnet152", 7), ("cifar_sharesnet164", 6),
    ("resnet50", 16), ("cifar_resnet164", 54), ("sharesnet34", 20),
])
def test_distinct_3x3_kernels(name, expected):
    params = abstract_variables(create_model(name, num_classes=10))["params"]
    assert count_stage_conv3x3_kernels(params) == expected


def test_shared_kernel_lives_once_and_batchnorm_stays_per_block():
    variables = abstract_variables(create_model("sharesnet50", num_classes=10))
    stage2 = variables["params"]["stage2"]
    assert stage2["shared_conv3x3"]["kernel"].shape == (3, 3, 128, 128)
    assert "conv2" in stage2["block1"]  # the strided 3x3 keeps its own kernel
    for block in ("block2", "block3", "block4"):
        assert "conv2" not in stage2[block]
        assert set(stage2[block]) >= {"bn1", "bn2", "bn3", "conv1", "conv3"}
        assert set(variables["batch_stats"]["stage2"][block]["bn2"]) == {"mean", "var"}


@pytest.mark.parametrize("plain, shared", [
    ("cifar_resnet164", "cifar_sharesnet164"),
    ("wrn28_10", "sharewrn28_10"),
    ("resnet18", "sharesnet18"),
    ("resnet50", "sharesnet50"),
    ("resnet152", "sharesnet152"),
])
def test_sharing_saves_parameters_not_compute(plain, shared):
    """Equal forward MACs, share='all' included: its strided shared 3x3 (ImageNet bottlenecks)
    runs as a strided convolution, not a stride-1 one subsampled afterwards."""
    plain_model = create_model(plain, num_classes=10)
    shared_model = create_model(shared, num_classes=10)
    all_model = create_model(shared, num_classes=10, share="all")
    assert forward_macs(plain_model) == forward_macs(shared_model) == forward_macs(all_model) > 0
    plain_params = count_params(abstract_variables(plain_model)["params"])
    shared_params = count_params(abstract_variables(shared_model)["params"])
    assert shared_params < plain_params



# Small members of each family, so the semantic checks run in seconds.
SMALL = {
    "cifar_bottleneck": ("cifar_sharesnet164", dict(stage_sizes=(3, 2, 2), stage_features=(4, 4, 8))),
    "cifar_basic": ("sharewrn28_10", dict(stage_sizes=(3, 2, 2), stage_features=(8, 8, 16))),
    "imagenet_basic": ("sharesnet18", dict(stage_sizes=(2, 2, 1, 1), stage_features=(8, 8, 16, 16))),
    "imagenet_bottleneck": ("sharesnet50", dict(stage_sizes=(2, 2, 1, 1), stage_features=(4, 4, 8, 8))),
}


def _tie_twin(shared_params, twin_params):
    """Twin params equal to the shared model's, with every tied 3x3 set to its stage's kernel.

    Returns the twin params and the paths of the tied kernels.
    """
    shared_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shared_params))
    twin_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(twin_params))
    tied = []
    for path in twin_flat:
        if path in shared_flat:
            twin_flat[path] = shared_flat[path]
        else:
            twin_flat[path] = shared_flat[(path[0], "shared_conv3x3", "kernel")]
            tied.append(path)
    assert set(shared_flat) - set(twin_flat) == {p for p in shared_flat if "shared_conv3x3" in p}
    return flax.traverse_util.unflatten_dict(twin_flat), tied


@pytest.mark.parametrize("share", ["paper", "all"])
@pytest.mark.parametrize("family", sorted(SMALL))
def test_shared_model_equals_tied_twin_outputs_and_gradients(family, share):
    name, fields = SMALL[family]
    shared_model = create_model(name, num_classes=5, share=share, **fields)
    twin_model = create_model(name, num_classes=5, share="none", **fields)
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    labels = jnp.arange(4) % 5
    shared_vars = shared_model.init(jax.random.key(0), images, train=False)
    twin_vars = twin_model.init(jax.random.key(0), images, train=False)
    twin_params, tied = _tie_twin(shared_vars["params"], twin_vars["params"])
    assert tied, "the small model must exercise sharing"

    def loss(model, params, batch_stats):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"])
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
        return ce, (logits, updates)

    (_, (shared_logits, shared_upd)), shared_grads = jax.value_and_grad(loss, 1, has_aux=True)(
        shared_model, shared_vars["params"], shared_vars["batch_stats"])
    (_, (twin_logits, twin_upd)), twin_grads = jax.value_and_grad(loss, 1, has_aux=True)(
        twin_model, twin_params, twin_vars["batch_stats"])

    np.testing.assert_allclose(shared_logits, twin_logits, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 shared_upd, twin_upd)
    shared_g = flax.traverse_util.flatten_dict(shared_grads)
    twin_g = flax.traverse_util.flatten_dict(twin_grads)
    for stage in {path[0] for path in tied}:
        summed = sum(twin_g[path] for path in tied if path[0] == stage)
        np.testing.assert_allclose(shared_g[(stage, "shared_conv3x3", "kernel")], summed,
                                   rtol=1e-4, atol=1e-5)
    for path, grad in shared_g.items():
        if "shared_conv3x3" not in path:
            np.testing.assert_allclose(grad, twin_g[path], rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_change_in_training_mode_only():
    model = create_model("cifar_sharesnet20", num_classes=10)
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3)) * 3 + 1
    variables = model.init(jax.random.key(1), images, train=False)
    _, eval_upd = model.apply(variables, images, train=False, mutable=["batch_stats"])
    _, train_upd = model.apply(variables, images, train=True, mutable=["batch_stats"])
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), variables["batch_stats"],
                        eval_upd["batch_stats"])
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                           train_upd["batch_stats"])
    assert all(jax.tree.leaves(same))
    assert all(jax.tree.leaves(changed))


def test_dropout_is_off_at_eval_and_on_in_training():
    model = create_model("sharewrn16_4", num_classes=10, dropout_rate=0.5,
                         stage_features=(8, 8, 8))
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), images, train=False)
    eval_a = model.apply(variables, images, train=False)
    eval_b = model.apply(variables, images, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)

    def train_logits(seed):
        out, _ = model.apply(variables, images, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(seed)})
        return out

    assert not np.allclose(train_logits(1), train_logits(2))


def test_bfloat16_compute_with_float32_parameters():
    images = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
    f32 = create_model("sharesnet18", num_classes=10)
    bf16 = create_model("sharesnet18", num_classes=10, dtype=jnp.bfloat16)
    variables = f32.init(jax.random.key(1), images, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16.init(jax.random.key(1), images,
                                                             train=False))} == {np.dtype("float32")}
    ref = f32.apply(variables, images, train=False)
    low = bf16.apply(variables, images, train=False)
    assert low.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(low)))
    assert float(jnp.max(jnp.abs(low - ref))) < 0.05 * float(jnp.max(jnp.abs(ref))) + 1e-2


def test_registry_names_and_errors():
    names = set(list_models())
    for depth in (20, 56, 110, 164, 1001):
        assert {f"cifar_resnet{depth}", f"cifar_sharesnet{depth}"} <= names
    for wrn in ("16_8", "28_4", "28_10", "40_4"):
        assert {f"wrn{wrn}", f"sharewrn{wrn}"} <= names
    for depth in (18, 34, 50, 101, 152):
        assert {f"resnet{depth}", f"sharesnet{depth}"} <= names
    # What the share modes build (README): ShaResNet-50 has 7 distinct 3x3 kernels and
    # 20,469,800 parameters; share='all' also shares the strided 3x3s: 4 kernels, 17,373,224.
    for share, kernels, params in ((None, 7, 20_469_800), ("all", 4, 17_373_224)):
        fields = {} if share is None else {"share": share}
        variables = abstract_variables(create_model("sharesnet50", num_classes=1000, **fields))
        assert count_params(variables["params"]) == params, share
        assert count_stage_conv3x3_kernels(variables["params"]) == kernels, share
    with pytest.raises(ValueError, match=r"unknown model 'sharesnet05'.*sharesnet50"):
        create_model("sharesnet05", num_classes=10)
    with pytest.raises(ValueError, match=r"no field 'dropout'"):
        create_model("wrn28_10", num_classes=10, dropout=0.3)
    with pytest.raises(ValueError, match=r"share='some'"):
        abstract_variables(create_model("resnet18", num_classes=10, share="some"))


def test_params_cli_prints_the_paper_table_matching(capsys):
    assert params_cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("| yes ") == 7 and "all counts match the paper" in out
    assert "36,821,032" in out
