"""Starting from existing weights: our checkpoints and torchvision files, made shared."""

import jax
import numpy as np
import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from sharesnet_jax.models import create_model
from sharesnet_jax.training.warm_start import initial_variables
from tests.helpers import tiny_config


def _fresh(model, size=32):
    return jax.device_get(model.init(jax.random.key(3), np.zeros((1, size, size, 3), np.float32),
                                     train=False))


@pytest.fixture(scope="module")
def unshared_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unshared")
    data_dir = str(tmp_path_factory.getbasetemp() / "tfds")
    train.train_and_evaluate(tiny_config(model="cifar_resnet20", data_dir=data_dir,
                                         num_train_steps=2), str(workdir))
    return workdir


def test_shared_model_starts_from_unshared_checkpoint(unshared_workdir, tmp_path, caplog):
    model = create_model("cifar_sharesnet20", num_classes=10)
    variables = initial_variables(str(unshared_workdir), "cifar_sharesnet20", model, _fresh(model))
    plain = create_model("cifar_resnet20", num_classes=10)
    source = initial_variables(str(unshared_workdir), "cifar_resnet20", plain, _fresh(plain))
    # Stage 1 has blocks 1-3; the paper shares the second 3x3 of blocks 2 and 3, so the shared
    # kernel starts as their mean; everything else is copied.
    stage = source["params"]["stage1"]
    np.testing.assert_allclose(variables["params"]["stage1"]["shared_conv3x3"]["kernel"],
                               (stage["block2"]["conv2"]["kernel"]
                                + stage["block3"]["conv2"]["kernel"]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(variables["batch_stats"]["stage2"]["block2"]["bn2"]["mean"],
                                  source["batch_stats"]["stage2"]["block2"]["bn2"]["mean"])
    # Through the trainer, at learning rate 0 (SGD then leaves every parameter as it starts):
    # the run's parameters ARE the warm-start variables, not a fresh init.
    results = train.train_and_evaluate(
        tiny_config(init_from=str(unshared_workdir), num_train_steps=2, learning_rate=0.0,
                    data_dir=str(tmp_path / "tfds")), str(tmp_path / "shared"))
    assert results["step"] == 2
    import orbax.checkpoint as ocp

    trained = ocp.StandardCheckpointer().restore(tmp_path / "shared" / "checkpoints" / "2" / "state")
    jax.tree.map(np.testing.assert_array_equal, trained["params"], variables["params"])


def test_torchvision_file_with_another_head_size(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = create_model("sharesnet18", num_classes=10)
    fresh = _fresh(model, 64)
    variables = initial_variables(str(path), "sharesnet18", model, fresh)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  fresh["params"]["head"]["kernel"])
    assert variables["params"]["stage4"]["shared_conv3x3"]["kernel"].shape == (3, 3, 512, 512)
    stem = torchvision.models.resnet18(weights=None)
    stem.load_state_dict(torch.load(path))
    np.testing.assert_allclose(variables["params"]["stem_conv"]["kernel"],
                               stem.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_init_from_errors(unshared_workdir, tmp_path):
    model = create_model("sharewrn16_4", num_classes=10)
    with pytest.raises(UserError, match="does not exist"):
        initial_variables(str(tmp_path / "nothing"), "sharewrn16_4", model, _fresh(model))
    with pytest.raises(UserError, match=r"init_from=.*(has no|holds \S+ with shape)"):
        initial_variables(str(unshared_workdir), "sharewrn16_4", model, _fresh(model))
