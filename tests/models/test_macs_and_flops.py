"""Forward multiply-adds against independent counts (by hand for the CIFAR pre-activation
ResNet-20 on square and non-square inputs; torchvision's published GFLOPS, which are MACs, for
the ImageNet ResNets), and the planner's FLOPs per step: 2 x MACs x batch x 3 passes (forward,
two backward convolutions), 4 with remat_policy='full' (an upper bound: the forward at most
twice), 3 with 'conv_outputs' (no convolution recomputed), 1 pass for evaluation."""

from __future__ import annotations

import pytest

from sharesnet_jax.models import create_model
from sharesnet_jax.models.stats import forward_macs
from sharesnet_jax.preflight.plan import eval_flops_per_device, train_flops_per_device


def _conv(h: int, w: int, kernel: int, cin: int, cout: int) -> int:
    return h * w * kernel * kernel * cin * cout


def _preact_resnet20_macs(h: int, w: int, classes: int = 10) -> int:
    """3x3 stem (3 -> 16), three stages of three basic blocks (16, 32, 64 features; stages 2 and
    3 open with a stride-2 3x3 and a stride-2 1x1 projection), global pool, dense head."""
    macs = _conv(h, w, 3, 3, 16) + 6 * _conv(h, w, 3, 16, 16)
    for step, cin, c in ((2, 16, 32), (4, 32, 64)):
        sh, sw = -(-h // step), -(-w // step)  # 'SAME'-style strided output: ceil
        macs += _conv(sh, sw, 3, cin, c) + _conv(sh, sw, 1, cin, c) + 5 * _conv(sh, sw, 3, c, c)
    return macs + 64 * classes


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_sharesnet20"])
@pytest.mark.parametrize("hw", [(32, 32), (24, 40), (16, 8)])
def test_forward_macs_of_resnet20_by_hand(name, hw):
    """A shared kernel counts once per use: the shared twin's MACs are the plain net's."""
    model = create_model(name, num_classes=10)
    assert forward_macs(model, (*hw, 3)) == _preact_resnet20_macs(*hw)


@pytest.mark.parametrize("name,gmacs", [("resnet18", 1.81), ("resnet34", 3.66),
                                        ("resnet50", 4.09), ("resnet101", 7.80),
                                        ("resnet152", 11.51), ("sharesnet152", 11.51)])
def test_forward_macs_of_imagenet_resnets_match_torchvisions_published_figures(name, gmacs):
    macs = forward_macs(create_model(name, num_classes=1000))
    assert round(macs / 1e9, 2) == gmacs


@pytest.mark.parametrize("remat_policy,passes", [("none", 3), ("conv_outputs", 3), ("full", 4)])
@pytest.mark.parametrize("stage_impl", ["loop", "scan"])
def test_planner_flops_are_three_passes_and_four_with_remat(remat_policy, passes, stage_impl):
    model = create_model("cifar_sharesnet20", num_classes=10, remat_policy=remat_policy,
                         stage_impl=stage_impl)
    macs = _preact_resnet20_macs(32, 32)
    assert train_flops_per_device(model, (32, 32, 3), 16) == 2 * macs * 16 * passes
    assert eval_flops_per_device(model, (32, 32, 3), 5) == 2 * macs * 5
