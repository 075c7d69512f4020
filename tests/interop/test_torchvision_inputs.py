"""Bad torchvision input: values of the wrong kind, a .pth without torch installed, a truncated
or foreign .pth: one line each."""

import sys

import jax
import numpy as np
import pytest

from sharesnet_jax.errors import UserError
from tests.small_run import _one_line


def _resnet18_state_dict() -> dict:
    from sharesnet_jax.interop.torchvision import to_torchvision
    from sharesnet_jax.models import create_model
    from sharesnet_jax.models.stats import abstract_variables

    shapes = abstract_variables(create_model("resnet18", num_classes=10))
    return to_torchvision(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), "resnet18")


@pytest.mark.parametrize("value,message", [
    ("abc", r"entry 'layer1.0.conv1.weight' holds str of dtype <U3, not a tensor of numbers"),
    ([[1, 2], [3]], r"entry 'layer1.0.conv1.weight' is not a tensor or array \(list"),
    (None, r"entry 'layer1.0.conv1.weight' holds NoneType of dtype object"),
    (np.zeros((64, 64, 3, 3), bool), r"holds ndarray of dtype bool, not a tensor of numbers"),
])
def test_from_torchvision_rejects_values_of_the_wrong_kind(value, message):
    from sharesnet_jax.interop.torchvision import from_torchvision

    state_dict = _resnet18_state_dict()
    state_dict["layer1.0.conv1.weight"] = value
    with pytest.raises(ValueError, match=message) as error:
        from_torchvision(state_dict, "resnet18")
    _one_line(error)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    from sharesnet_jax.interop.torchvision import from_torchvision

    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match=r"needs torch, which is not installed: pip install -e "
                                         r"\"\.\[torch\]\""):
        from_torchvision(str(path), "resnet18")


@pytest.mark.parametrize("content", [b"", b"certainly not a zip or pickle", b"PK\x03\x04trunc"])
def test_truncated_or_foreign_pth_is_one_line(tmp_path, content):
    pytest.importorskip("torch")
    from sharesnet_jax.models import create_model
    from sharesnet_jax.training.warm_start import source_variables

    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"init_from=.*resnet18.pth.* is not a readable torch "
                                        r"state dict") as error:
        source_variables(str(path), "resnet18", create_model("resnet18", num_classes=10))
    _one_line(error)
