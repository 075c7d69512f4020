"""Weight conversion without torch: torchvision layout on numpy dicts, its errors, and shareify."""

import flax
import numpy as np
import pytest

from sharesnet_jax.convert import (
    ShareReport, from_torchvision, relative_distance, shareify, to_torchvision,
)
from sharesnet_jax.models import create_model
from sharesnet_jax.models.stats import abstract_variables, count_params

# Slim ImageNet nets: the torchvision layout does not depend on the widths.
SLIM18 = dict(stage_features=(4, 4, 8, 8))
SLIM50 = dict(stage_sizes=(2, 2, 1, 1), stage_features=(4, 4, 8, 8))


def _flat(tree, prefix=()):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _unflat(flat):
    return flax.traverse_util.unflatten_dict(dict(flat))


def _random_variables(model, seed=0):
    """Random variables in the model's tree, BN not the identity; built from shapes alone, which is
    much faster than `model.init` (no tracing of the forward pass)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in _flat(abstract_variables(model)).items():
        if path[-1] == "kernel":  # He-normal on fan-out, like the model's own init
            value = rng.normal(0.0, np.sqrt(2.0 / (np.prod(leaf.shape[:-2]) * leaf.shape[-1])),
                               leaf.shape)
        elif path[-1] in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:  # bias, mean
            value = rng.normal(0.0, 0.1, leaf.shape)
        flat[path] = value.astype(np.float32)
    return _unflat(flat)


def _assert_trees_equal(a, b):
    fa, fb = _flat(a), _flat(b)
    assert set(fa) == set(fb)
    for path in fa:
        assert np.asarray(fa[path]).dtype == np.asarray(fb[path]).dtype, path
        np.testing.assert_array_equal(fa[path], fb[path], err_msg="/".join(path))


@pytest.fixture(scope="module")
def slim18():
    return _random_variables(create_model("resnet18", num_classes=10, **SLIM18))


@pytest.fixture(scope="module")
def slim18_state_dict(slim18):
    return to_torchvision(slim18, "resnet18", **SLIM18)


# ----------------------------------------------------------------------------- torchvision layout


def test_layouts_are_transposed_explicitly(slim18, slim18_state_dict):
    sd, params, stats = slim18_state_dict, slim18["params"], slim18["batch_stats"]
    assert sd["conv1.weight"].shape == (4, 3, 7, 7)  # OIHW
    np.testing.assert_array_equal(sd["conv1.weight"],
                                  np.transpose(params["stem_conv"]["kernel"], (3, 2, 0, 1)))
    np.testing.assert_array_equal(sd["fc.weight"], np.asarray(params["head"]["kernel"]).T)
    np.testing.assert_array_equal(sd["fc.bias"], params["head"]["bias"])
    np.testing.assert_array_equal(sd["layer2.0.downsample.1.weight"],
                                  params["stage2"]["block1"]["proj_bn"]["scale"])
    np.testing.assert_array_equal(sd["layer4.1.bn2.running_var"],
                                  stats["stage4"]["block2"]["bn2"]["var"])
    assert sd["bn1.num_batches_tracked"].dtype == np.int64
    assert sd["bn1.num_batches_tracked"].shape == ()


def test_key_names_and_order_follow_torchvision(slim18_state_dict):
    keys = list(slim18_state_dict)
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var", "bn1.num_batches_tracked"]
    assert keys[6:8] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    # 20 convs + 20 BNs x 5 tensors + fc (2) for resnet18 (3 of the convs are downsample.0).
    assert len(keys) == 20 + 20 * 5 + 2
    assert "layer3.0.downsample.0.weight" in keys and "layer1.0.downsample.0.weight" not in keys


def test_round_trip_is_exact(slim18, slim18_state_dict):
    back = from_torchvision(slim18_state_dict, "resnet18", **SLIM18)
    _assert_trees_equal(back, slim18)
    again = to_torchvision(back, "resnet18", **SLIM18)
    assert list(again) == list(slim18_state_dict)
    for key, value in slim18_state_dict.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_num_classes_is_inferred_and_counters_are_optional(slim18_state_dict):
    sd = {k: v for k, v in slim18_state_dict.items() if not k.endswith("num_batches_tracked")}
    variables = from_torchvision(sd, "resnet18", **SLIM18)
    assert variables["params"]["head"]["kernel"].shape == (8, 10)
    assert set(variables) == {"params", "batch_stats"}


def test_bottleneck_round_trip():
    variables = _random_variables(create_model("resnet50", num_classes=7, **SLIM50))
    sd = to_torchvision(variables, "resnet50", **SLIM50)
    assert sd["layer1.0.downsample.0.weight"].shape == (16, 4, 1, 1)
    assert sd["layer3.0.conv3.weight"].shape == (32, 8, 1, 1)
    _assert_trees_equal(from_torchvision(sd, "resnet50", **SLIM50), variables)


def _error(state_dict, **kwargs):
    with pytest.raises(ValueError) as info:
        from_torchvision(state_dict, "resnet18", **{**SLIM18, **kwargs})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_key_is_named(slim18_state_dict):
    sd = dict(slim18_state_dict)
    del sd["layer2.1.bn1.running_mean"]
    message = _error(sd)
    assert "missing 'layer2.1.bn1.running_mean'" in message
    assert "resnet18" in message


def test_wrong_shape_is_named_with_both_shapes(slim18_state_dict):
    sd = dict(slim18_state_dict, **{"layer3.1.conv2.weight": np.zeros((8, 8, 1, 1), np.float32)})
    message = _error(sd)
    assert "'layer3.1.conv2.weight' has shape (8, 8, 1, 1), expected (8, 8, 3, 3)" in message


def test_extra_key_is_named(slim18_state_dict):
    sd = dict(slim18_state_dict, **{"layer5.0.conv1.weight": np.zeros((1,), np.float32)})
    assert "unexpected 'layer5.0.conv1.weight'" in _error(sd)


def test_first_problem_is_reported_with_a_count(slim18_state_dict):
    sd = dict(slim18_state_dict, extra=np.zeros(3))
    del sd["fc.bias"]
    message = _error(sd, num_classes=10)
    assert message.endswith("missing 'fc.bias' (1 missing, 1 unexpected in all)")


def test_wrong_class_count_is_a_shape_error(slim18_state_dict):
    message = _error(slim18_state_dict, num_classes=1000)
    assert "'fc.weight' has shape (10, 8), expected (1000, 8)" in message


def test_wrong_architecture_is_rejected(slim18_state_dict):
    message = r"missing 'layer1\.2\.conv1\.weight' \(80 missing in all\)"
    with pytest.raises(ValueError, match=message):
        from_torchvision(slim18_state_dict, "resnet34", **SLIM18)


@pytest.mark.parametrize("name,match", [
    ("sharesnet18", "shareify"), ("cifar_resnet20", "ImageNet nets"), ("resnet19", "unknown model"),
])
def test_only_unshared_imagenet_nets_convert(slim18_state_dict, name, match):
    with pytest.raises(ValueError, match=match):
        from_torchvision(slim18_state_dict, name, **SLIM18)


def test_to_torchvision_rejects_a_tree_that_does_not_fit(slim18):
    flat = _flat(slim18)
    del flat[("params", "stage1", "block1", "conv2", "kernel")]
    with pytest.raises(ValueError, match="missing 'params/stage1/block1/conv2/kernel'"):
        to_torchvision(_unflat(flat), "resnet18", **SLIM18)


def test_not_a_state_dict():
    with pytest.raises(ValueError, match="expected a state dict"):
        from_torchvision([1, 2], "resnet18")


# ----------------------------------------------------------------------------- shareify

SHAREIFY_CASES = {
    "cifar_bottleneck": ("cifar_resnet164", "cifar_sharesnet164",
                         dict(stage_sizes=(2, 2, 2), stage_features=(4, 4, 8))),
    "cifar_wide": ("wrn16_4", "sharewrn16_4",
                   dict(stage_sizes=(3, 2, 2), stage_features=(4, 8, 8))),
    "imagenet_basic": ("resnet18", "sharesnet18", dict(stage_sizes=(2, 2, 1, 1),
                                                      stage_features=(4, 4, 8, 8))),
    "imagenet_bottleneck": ("resnet50", "sharesnet50", SLIM50),
}


def _replaced_by_stage(plain_name, shared_name, overrides, share="paper"):
    """The kernel paths the shared twin lacks, grouped by stage: the test's own bookkeeping."""
    plain = _flat(abstract_variables(create_model(plain_name, num_classes=10, **overrides)))
    shared = _flat(abstract_variables(
        create_model(shared_name, num_classes=10, share=share, **overrides)))
    groups = {}
    for path in plain:
        if path not in shared:
            groups.setdefault(path[1], []).append(path)
    return groups


def _tie(variables, groups):
    """Sets every replaced kernel of a stage equal to the stage's first one (a leaf may hold a
    stack of kernels, under stage_impl='scan')."""
    flat = _flat(variables)
    for paths in groups.values():
        first = np.asarray(flat[paths[0]])
        reference = first.reshape(-1, *first.shape[-4:])[0]
        for path in paths:
            flat[path] = np.broadcast_to(reference, np.shape(flat[path])).copy()
    return _unflat(flat)


@pytest.mark.parametrize("share", ["paper", "all"])
@pytest.mark.parametrize("case", sorted(SHAREIFY_CASES))
def test_shareify_of_tied_kernels_is_exact(case, share):
    plain_name, shared_name, overrides = SHAREIFY_CASES[case]
    plain_model = create_model(plain_name, num_classes=10, **overrides)
    groups = _replaced_by_stage(plain_name, shared_name, overrides, share)
    variables = _tie(_random_variables(plain_model, seed=1), groups)

    shared_vars, report = shareify(variables, plain_name, share=share, **overrides)

    shared_model = create_model(plain_name, num_classes=10, share=share, **overrides)
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    expected = plain_model.apply(variables, images, train=False)
    got = shared_model.apply(shared_vars, images, train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert [s.stage for s in report] == sorted(groups)
    assert [s.replaced for s in report] == [len(groups[s]) for s in sorted(groups)]
    assert all(s.rel_distance == 0.0 for s in report)
    assert count_params(shared_vars["params"]) == count_params(
        abstract_variables(shared_model)["params"]) == report.params_after
    assert report.params_before == count_params(variables["params"])


@pytest.mark.parametrize("case", sorted(SHAREIFY_CASES))
def test_shareify_copies_everything_else_and_averages(case):
    plain_name, shared_name, overrides = SHAREIFY_CASES[case]
    variables = _random_variables(create_model(plain_name, num_classes=10, **overrides), seed=3)
    shared_vars, report = shareify(variables, shared_name, **overrides)  # the shared name works too
    plain, shared = _flat(variables), _flat(shared_vars)
    groups = _replaced_by_stage(plain_name, shared_name, overrides)
    for path, value in shared.items():
        if path in plain:
            np.testing.assert_array_equal(value, plain[path], err_msg="/".join(path))
        else:
            stage = path[1]
            mean = np.mean([np.asarray(plain[p], np.float64) for p in groups[stage]], axis=0)
            np.testing.assert_allclose(value, mean, rtol=1e-6, atol=1e-7)
    for row in report:
        if row.replaced > 1:  # random He-init kernels: about sqrt(n - 1) from their mean
            assert 0.5 * np.sqrt(row.replaced - 1) < row.rel_distance < 2 * np.sqrt(row.replaced)
        else:
            assert row.rel_distance == 0.0


def test_shareify_of_scanned_stages_averages_the_stack():
    """Under stage_impl='scan' blocks 2..n of a stage live in one stacked leaf per kernel."""
    overrides = dict(stage_sizes=(3, 3, 1, 1), stage_features=(4, 4, 8, 8), stage_impl="scan")
    plain_model = create_model("resnet50", num_classes=10, **overrides)
    groups = _replaced_by_stage("resnet50", "sharesnet50", overrides)
    assert ("params", "stage1", "scanned_blocks", "conv2", "kernel") in groups["stage1"]
    variables = _tie(_random_variables(plain_model, seed=5), groups)
    shared_vars, report = shareify(variables, "resnet50", **overrides)
    assert [(s.stage, s.replaced, s.rel_distance) for s in report] == [
        ("stage1", 3, 0.0), ("stage2", 2, 0.0)]
    images = np.random.default_rng(6).normal(size=(2, 32, 32, 3)).astype(np.float32)
    shared_model = create_model("sharesnet50", num_classes=10, **overrides)
    np.testing.assert_allclose(shared_model.apply(shared_vars, images, train=False),
                               plain_model.apply(variables, images, train=False),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="stage_impl='loop'"):
        to_torchvision(variables, "resnet50", **overrides)


def test_report_is_readable():
    plain_name, _, overrides = SHAREIFY_CASES["imagenet_bottleneck"]
    variables = _random_variables(create_model(plain_name, num_classes=10, **overrides))
    _, report = shareify(variables, plain_name, **overrides)
    assert isinstance(report, ShareReport)
    # Paper rule: stage1 shares both 3x3s, stage2 the unstrided one, stages 3-4 (1 block) none.
    assert [(s.stage, s.replaced, s.kernel_shape) for s in report] == [
        ("stage1", 2, (3, 3, 4, 4)), ("stage2", 1, (3, 3, 4, 4))]
    text = str(report)
    assert "stage1" in text and "rel. distance" in text and "sqrt(mean_i" in text
    assert f"{report.params_before:,} -> {report.params_after:,}" in text


def test_shareify_rejects_variables_of_another_model():
    plain_name, _, overrides = SHAREIFY_CASES["cifar_bottleneck"]
    variables = _random_variables(create_model(plain_name, num_classes=10, **overrides))
    with pytest.raises(ValueError) as info:
        shareify(variables, plain_name, stage_sizes=(3, 2, 2), stage_features=(4, 4, 8))
    assert "missing 'params/stage1/block3/" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="share='some'"):
        shareify(variables, plain_name, share="some", **overrides)


def test_relative_distance_definition():
    k = np.ones((3, 3, 2, 2))
    assert relative_distance(np.stack([k, k, k])) == 0.0
    # kernels 0 and 2: mean 1, each at distance ||1|| -> ratio 1.
    assert relative_distance(np.stack([0 * k, 2 * k])) == pytest.approx(1.0)
    assert relative_distance(np.stack([k, -k])) == np.inf
    assert relative_distance(np.zeros((2, 3, 3, 1, 1))) == 0.0
