"""What share='all' builds, as the README states it: every 3x3 of a stage whose kernel has the
shared kernel's shape uses it (CIFAR ResNet-164: 880,730 parameters, 3 distinct 3x3 kernels;
ResNet-50: 17,373,224 and 4), and share='none' makes a ShaResNet name its unshared twin."""

import pytest

from sharesnet_jax.models import create_model
from sharesnet_jax.models.stats import (
    abstract_variables, count_params, count_stage_conv3x3_kernels,
)


@pytest.mark.parametrize("name,share,params,kernels", [
    ("cifar_sharesnet164", "all", 880_730, 3), ("cifar_sharesnet164", "none", 1_703_258, 54),
    ("sharesnet50", "all", 17_373_224, 4), ("sharesnet50", "none", 25_557_032, 16)])
def test_share_modes_build_the_stated_counts(name, share, params, kernels):
    variables = abstract_variables(create_model(name, num_classes=10 if "cifar" in name else 1000,
                                                share=share))
    assert count_params(variables["params"]) == params
    assert count_stage_conv3x3_kernels(variables["params"]) == kernels
