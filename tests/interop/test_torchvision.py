"""Our ImageNet ResNets against torchvision itself: converted weights give torchvision's logits.

Needs the `torch` extra (torch + torchvision); skipped without it. Models are randomly initialised
(`weights=None`, nothing is downloaded) and their BatchNorms randomised, so an identity BN cannot
hide a mix-up of scale/bias/mean/var.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from sharesnet_jax.convert import from_torchvision, shareify, to_torchvision  # noqa: E402
from sharesnet_jax.models import create_model  # noqa: E402

torch.set_num_threads(2)

# Every depth at 224; the basic and the bottleneck family also at an odd, non-square size, where
# the padding of the strided convs and of the max-pool must match torchvision's exactly.
CASES = {
    "resnet18": ((224, 224), (97, 129)),
    "resnet34": ((224, 224),),
    "resnet50": ((224, 224), (97, 129)),
    "resnet101": ((224, 224),),
    "resnet152": ((224, 224),),
}
RTOL = 1e-4


def _torchvision_model(name, num_classes=1000, seed=0):
    """A torchvision ResNet in eval mode with random BN affine params and running statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.eval()


def _torch_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def _assert_close(ours, theirs, what):
    """Norm-based: the logits of a deep random net vary in scale, elementwise rtol would not."""
    error = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert error < RTOL, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("name", sorted(CASES, key=lambda n: int(n[6:])))
def test_logits_match_torchvision(name):
    tv_model = _torchvision_model(name)
    variables = from_torchvision(tv_model.state_dict(), name)
    model = create_model(name, num_classes=1000)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    rng = np.random.default_rng(0)
    for height, width in CASES[name]:
        images = rng.normal(size=(2, height, width, 3)).astype(np.float32)
        ours = np.asarray(apply(variables, images))
        theirs = _torch_logits(tv_model, images)
        assert ours.shape == theirs.shape == (2, 1000)
        _assert_close(ours, theirs, f"{name} at {height}x{width}")


def test_state_dict_round_trip_and_strict_load(tmp_path):
    tv_model = _torchvision_model("resnet18", num_classes=10, seed=3)
    state_dict = tv_model.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict, path)

    variables = from_torchvision(path, "resnet18")  # num_classes read from fc.weight
    assert variables["params"]["head"]["kernel"].shape == (512, 10)
    back = to_torchvision(variables, "resnet18")
    assert list(back) == list(state_dict)  # torchvision's names and order
    for key, tensor in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)

    fresh = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(_torch_logits(fresh, images), _torch_logits(tv_model, images))


def test_shareify_of_converted_weights_runs():
    """The documented path: torchvision weights -> our resnet18 -> sharesnet18 twin."""
    tv_model = _torchvision_model("resnet18", num_classes=10, seed=4)
    shared, report = shareify(from_torchvision(tv_model.state_dict(), "resnet18"), "resnet18")
    assert [s.replaced for s in report] == [2, 2, 2, 2]
    images = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
    logits = create_model("sharesnet18", num_classes=10).apply(shared, images, train=False)
    assert logits.shape == (1, 10) and np.isfinite(np.asarray(logits)).all()
