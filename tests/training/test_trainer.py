"""The trainer end to end, on the embedded digits and tiny real TFDS datasets, offline."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sharesnet_jax import train
from sharesnet_jax.training.run_setup import build_model
from sharesnet_jax.data.info import KNOWN_NUM_CLASSES
from sharesnet_jax.models.stats import abstract_variables, count_params
from tests.helpers import ROOT, tiny_config, write_tiny_tfds_dataset



def test_digits_run_learns_and_writes_results(tmp_path, data_dir, caplog):
    caplog.set_level("INFO")
    # A cosine decay: early on, BatchNorm's running averages lag the fast-moving weights and
    # the evaluation (which uses them) swings; the decay lets them settle by the end.
    config = tiny_config(data_dir=data_dir, num_train_steps=100, log_every_steps=20,
                         checkpoint_every_steps=50, learning_rate=0.1, schedule="cosine",
                         warmup_epochs=0.5)
    results = train.train_and_evaluate(config, str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    assert set(results) >= {"step", "eval_accuracy", "eval_top5_accuracy", "eval_loss",
                            "num_params", "wall_seconds"}
    assert results["step"] == 100
    # The test split (300) is not a multiple of the eval batch (64): every example counts once.
    assert results["eval_examples"] == 300
    # Chance is 10% accuracy; 100 steps (2.1 epochs) must do far better, and the training loss
    # (logged every 20 steps) must fall well below its start.
    assert results["eval_accuracy"] > 0.3
    train_losses = [float(m) for m in re.findall(r"train_loss=([0-9.]+)", caplog.text)]
    assert len(train_losses) >= 3 and train_losses[-1] < 0.7 * train_losses[0], train_losses
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["100", "50"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_stopped_and_restarted_run_matches_uninterrupted(tmp_path, data_dir):
    whole = train.train_and_evaluate(tiny_config(data_dir=data_dir, num_train_steps=4),
                                     str(tmp_path / "whole"))
    first = train.train_and_evaluate(tiny_config(data_dir=data_dir, num_train_steps=2),
                                     str(tmp_path / "split"))
    assert (first["step"], first["steps_run"], whole["steps_run"]) == (2, 2, 4)
    resumed = train.train_and_evaluate(tiny_config(data_dir=data_dir, num_train_steps=4),
                                       str(tmp_path / "split"))
    # The fingerprint alone cannot tell resuming from restarting (a restart from step 0 ends
    # the same): the resumed process ran steps 3 and 4 only.
    assert (resumed["step"], resumed["steps_run"]) == (4, 2)
    for key in ("eval_accuracy", "eval_loss", "params_fingerprint"):
        assert resumed[key] == whole[key], key


@pytest.mark.parametrize("dataset,eval_split,model,image_size", [
    ("cifar10", "test", "cifar_sharesnet14", None),
    ("imagenet2012", "validation", "sharesnet18", 64),  # JPEGs of many sizes
])
def test_paper_datasets_train_end_to_end(tmp_path, dataset, eval_split, model, image_size):
    data_dir = write_tiny_tfds_dataset(tmp_path / "d", dataset, {"train": 40, eval_split: 16})
    config = tiny_config(dataset=dataset, model=model, image_size=image_size, batch_size=8,
                         eval_batch_size=16, num_train_steps=2, data_dir=data_dir)
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert results["step"] == 2
    assert np.isfinite(results["eval_loss"])


def _load_config(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


CONFIG_FILES = sorted((ROOT / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_loads_and_its_docstring_states_its_command_and_parameter_count(path):
    config = _load_config(path)
    text = path.read_text()
    assert text.count(f"--config=configs/{path.name}") == 1, "docstring command"
    num_classes = config.num_classes or KNOWN_NUM_CLASSES[config.dataset]
    stated = re.search(r"Parameters: ([\d,]+)", text)
    assert stated, "docstring parameter count"
    model = build_model(config, num_classes)
    assert count_params(abstract_variables(model)["params"]) == int(stated[1].replace(",", ""))


def test_paper_configs_follow_the_recipes():
    c = _load_config(ROOT / "configs/imagenet_sharesnet152.py")
    assert (c.model, c.dataset, c.batch_size, c.weight_decay) == ("sharesnet152", "imagenet2012", 256, 1e-4)
    c.batch_size = 1024  # the learning rate follows the global batch
    from sharesnet_jax.training.optim import scaled_learning_rate
    assert scaled_learning_rate(c) == pytest.approx(0.4)
    c = _load_config(ROOT / "configs/cifar100_sharewrn28_10.py")
    assert (c.dropout_rate, c.weight_decay, tuple(c.lr_decay_epochs)) == (0.3, 5e-4, (59, 119, 159))


_SHARDED_STEP = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from sharesnet_jax.training import optim, sharding
from sharesnet_jax.models import create_model
from sharesnet_jax.training.steps import create_train_state, make_train_step
sys.path.insert(0, sys.argv[1])
from tests.helpers import ROOT, tiny_config

assert jax.device_count() == 8
config = tiny_config()
# No dropout: each device draws its own masks, so they depend on the device count.
model = create_model("sharewrn16_4", num_classes=10, stage_features=(8, 8, 16),
                     bn_group_size=int(sys.argv[2]))
schedule = optim.learning_rate_schedule(config, 10, 10)
tx = optim.create_optimizer(config, schedule)
rng = np.random.default_rng(0)
batch = {"image": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
         "label": rng.integers(0, 10, (32,), dtype=np.int32)}

def run(devices):
    mesh = sharding.make_data_mesh(devices)
    rep = sharding.replicated(mesh)
    state = jax.jit(lambda: create_train_state(model, tx, 0, (32, 32, 3)), out_shardings=rep)()
    step = jax.jit(make_train_step(model, tx, schedule, (127.0,) * 3, (60.0,) * 3, mesh=mesh),
                   in_shardings=(rep, sharding.batch_sharded(mesh)), out_shardings=(rep, rep))
    for _ in range(2):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
    assert len(state.params["head"]["kernel"].sharding.device_set) == len(devices)
    return jax.device_get((state.params, state.batch_stats, metrics["loss"]))

one, eight = run(jax.devices()[:1]), run(jax.devices())
diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one, eight))
print("max abs diff 1 vs 8 devices:", max(diffs))
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), one, eight)
print("OK")
"""


@pytest.mark.parametrize("bn_group_size", [0, 4, 2, 8])
def test_train_step_on_8_devices_matches_1_device(bn_group_size):
    """BatchNorm over the global batch (0), or over groups of 4 (one group per device on 8),
    2 (two per device) or 8 (one over two devices): the same step on 1 and 8 devices."""
    result = subprocess.run([sys.executable, "-c", _SHARDED_STEP, str(ROOT), str(bn_group_size)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("config_file,image_size", [
    ("cifar10_sharesnet164.py", None),
    ("imagenet_sharesnet50.py", 128),
])
def test_paper_config_runs_steps_on_tiny_datasets(tmp_path, config_file, image_size):
    """The full-size paper models through the real pipelines (slow: minutes of CPU compile)."""
    config = _load_config(ROOT / "configs" / config_file)
    eval_split = "validation" if config.dataset.startswith("imagenet") else "test"
    data_dir = write_tiny_tfds_dataset(tmp_path / "d", config.dataset,
                                       {config.train_split: 24, eval_split: 16})
    config.update(dict(batch_size=8, eval_batch_size=16, num_train_steps=2, log_every_steps=1,
                       data_dir=data_dir))
    config.image_size = image_size
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert results["step"] == 2 and np.isfinite(results["eval_loss"])


@pytest.mark.slow
def test_default_config_reaches_the_readme_accuracy(tmp_path):
    """README, Quick start: the default run "prints the final test accuracy, >= 97%"."""
    config = _load_config(ROOT / "configs/default.py")
    config.data_dir = str(tmp_path / "tfds")
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert results["eval_examples"] == 300
    assert results["eval_accuracy"] >= 0.97, results
