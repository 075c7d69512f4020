"""Each family starts as the Torch code that trained it started (models/initialization.py):
the Wide ResNet code for the CIFAR nets, fb.resnet.torch for the ImageNet nets. Checked on the
statistics of every kernel and BatchNorm scale of a real model, with enough samples that a
fan_in/fan_out swap or another scale fails."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharesnet_jax.models import create_model

# family: (a model of it, fewer blocks to compile its init fast, which fan its conv init uses,
# whether BatchNorm scales are U(0, 1))
FAMILIES = {
    "cifar_basic": ("sharewrn16_4", (2, 2, 2), "in", True),
    "cifar_bottleneck": ("cifar_sharesnet164", (2, 2, 2), "in", True),
    "imagenet_basic": ("sharesnet18", (1, 2, 1, 1), "out", False),
    "imagenet_bottleneck": ("sharesnet50", (1, 2, 1, 1), "out", False),
}
NUM_CLASSES = 100  # a head of 100 columns: enough samples for its statistics


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def initialised(request):
    name, stage_sizes, fan, uniform_scale = FAMILIES[request.param]
    model = create_model(name, num_classes=NUM_CLASSES, stage_sizes=stage_sizes)
    variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                           train=False))()
    flat = flax.traverse_util.flatten_dict(jax.device_get(variables["params"]), sep="/")
    return fan, uniform_scale, flat


def test_conv_kernels_are_normal_with_the_family_fan(initialised):
    fan, _, flat = initialised
    kernels = {path: leaf for path, leaf in flat.items() if leaf.ndim == 4}
    assert any("shared_conv3x3" in path for path in kernels)  # the shared kernels too
    telling = 0  # kernels whose fans differ and whose size tells the two apart
    for path, kernel in kernels.items():
        kh, kw, c_in, c_out = kernel.shape
        expected = math.sqrt(2 / (kh * kw * (c_in if fan == "in" else c_out)))
        standard_error = expected / math.sqrt(2 * kernel.size)
        assert abs(kernel.std() - expected) < 5 * standard_error + 1e-3 * expected, path
        assert abs(kernel.mean()) < 5 * expected / math.sqrt(kernel.size), path
        telling += c_in != c_out and kernel.size >= 2000
    assert telling >= 2


def test_batchnorm_scales_and_biases(initialised):
    _, uniform_scale, flat = initialised
    scales = np.concatenate([leaf for path, leaf in flat.items() if path.endswith("/scale")])
    biases = [leaf for path, leaf in flat.items() if path.endswith("/bias")]
    assert all(np.all(bias == 0) for bias in biases)  # BatchNorm and classifier biases
    if uniform_scale:  # Torch's BatchNormalization:reset, never overridden: U(0, 1)
        assert scales.min() >= 0 and scales.max() < 1
        assert abs(scales.mean() - 0.5) < 5 * math.sqrt(1 / 12 / scales.size)
        assert abs(scales.std() - math.sqrt(1 / 12)) < 0.02
    else:
        assert np.all(scales == 1)


def test_classifier_weight_is_torch_linear_default(initialised):
    _, _, flat = initialised
    kernel = flat["head/kernel"]
    bound = 1 / math.sqrt(kernel.shape[0])  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(kernel).max() <= bound
    assert abs(kernel.std() - bound / math.sqrt(3)) < 5 * bound / math.sqrt(3 * 2 * kernel.size)
    assert np.abs(kernel).max() > 0.95 * bound  # uniform up to the bound, not a narrower law
