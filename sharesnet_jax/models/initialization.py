"""How each family's parameters start: the initialisation of the Torch code that trained it.

The CIFAR nets (pre-activation ResNets, Wide ResNets and their shared twins) were trained with
the Wide ResNet code (szagoruyko/wide-residual-networks, `models/utils.lua` after commit ea02518
of 2016-09-08, "fix MSRA init"; the author's `cifar/*.lua` model files call it). Each model file
runs DisableBias, testModel (which ends in `model:reset()`), MSRinit and FCinit, so:
- conv kernels N(0, 2 / (k*k*C_in)) (MSRinit, utils.lua L3-9: n = kW*kH*nInputPlane);
- BatchNorm scale U(0, 1) and bias 0 (torch/nn BatchNormalization:reset, never overridden);
- classifier weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch/nn Linear:reset) and bias 0 (FCinit).

The ImageNet nets were trained with fb.resnet.torch (`models/resnet.lua` L167-193, which the
author's `imagenet/sharesnet.lua` L186-212 repeats):
- conv kernels N(0, 2 / (k*k*C_out));
- BatchNorm scale 1, bias 0;
- classifier weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Torch's default, not overridden), bias 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

Initializer = Callable

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = variance scaling 1/3, uniform (its limit is sqrt(3 s / n)).
_TORCH_LINEAR_WEIGHT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class Initialization:
    """The initialisers of one family: every conv kernel (the shared 3x3 included, which is
    created exactly as its blocks' convs would create it), every BatchNorm scale, the classifier.
    Biases (BatchNorm, classifier) start at zero in both schemes."""

    name: str
    conv_kernel: Initializer
    norm_scale: Initializer
    head_kernel: Initializer


WIDE_RESNET_TORCH = Initialization(
    name="wide-resnet-torch",
    conv_kernel=nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    norm_scale=nn.initializers.uniform(scale=1.0),  # U(0, 1)
    head_kernel=_TORCH_LINEAR_WEIGHT,
)

FB_RESNET_TORCH = Initialization(
    name="fb-resnet-torch",
    conv_kernel=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    norm_scale=nn.initializers.ones,
    head_kernel=_TORCH_LINEAR_WEIGHT,
)
