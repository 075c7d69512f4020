"""Every config in configs/ against what its docstring, the recipes' docstrings and the README
promise, transcribed here by hand: the Wide ResNet code's CIFAR recipe, fb.resnet.torch's
ImageNet recipe, the offline default, and each paper config's stated figure as the paper's
table prints it (arXiv:1702.08782, Table: parameters and test error)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.helpers import ROOT

CIFAR = dict(optimizer="sgd", nesterov=True, momentum=0.9, batch_size=128, learning_rate=0.1,
             learning_rate_batch_size=128, schedule="steps", lr_decay_epochs=(59, 119, 159),
             lr_decay_factor=0.2, warmup_epochs=0.0, num_epochs=200.0, weight_decay=5e-4,
             shuffle_buffer=0, bn_group_size=0, augment="auto", color_jitter=0.0,
             pca_lighting=0.0, label_smoothing=0.0, dtype="float32")
IMAGENET = dict(optimizer="sgd", nesterov=True, momentum=0.9, batch_size=256, learning_rate=0.1,
                learning_rate_batch_size=256, schedule="steps", lr_decay_epochs=(30, 60),
                lr_decay_factor=0.1, warmup_epochs=0.0, num_epochs=90.0, weight_decay=1e-4,
                shuffle_buffer=50_000, bn_group_size=64, augment="auto", color_jitter=0.4,
                pca_lighting=0.1, label_smoothing=0.0, dataset="imagenet2012", dtype="float32")

# config file: (model, dataset, dropout, the paper's error as the paper's table prints it)
PAPER_CONFIGS = {
    "cifar10_resnet164": ("cifar_resnet164", "cifar10", None, "5.46%"),
    "cifar10_sharesnet164": ("cifar_sharesnet164", "cifar10", None, "6.2%"),
    "cifar10_wrn40_4": ("wrn40_4", "cifar10", None, "4.17%"),
    "cifar10_sharewrn40_4": ("sharewrn40_4", "cifar10", None, "5.1%"),
    "cifar100_wrn28_10": ("wrn28_10", "cifar100", 0.3, "20.0%"),
    "cifar100_sharewrn28_10": ("sharewrn28_10", "cifar100", 0.3, "20.2%"),
    "imagenet_resnet34": ("resnet34", "imagenet2012", None, "26.73% top-1 / 8.74% top-5"),
    "imagenet_sharesnet34": ("sharesnet34", "imagenet2012", None, "28.25% top-1 / 9.42% top-5"),
    "imagenet_resnet50": ("resnet50", "imagenet2012", None, "24.01% top-1 / 7.02% top-5"),
    "imagenet_sharesnet50": ("sharesnet50", "imagenet2012", None, "24.61% top-1 / 7.41% top-5"),
    "imagenet_resnet101": ("resnet101", "imagenet2012", None, "22.44% top-1 / 6.21% top-5"),
    "imagenet_sharesnet101": ("sharesnet101", "imagenet2012", None,
                              "22.91% top-1 / 6.55% top-5"),
    "imagenet_resnet152": ("resnet152", "imagenet2012", None, "22.16% top-1 / 6.16% top-5"),
    "imagenet_sharesnet152": ("sharesnet152", "imagenet2012", None,
                              "22.23% top-1 / 6.14% top-5"),
}


def _load(stem: str):
    path = ROOT / "configs" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(), path.read_text()


def _check(config, expected: dict) -> None:
    wrong = {k: (config[k], v) for k, v in expected.items()
             if (tuple(config[k]) if isinstance(v, tuple) else config[k]) != v}
    assert not wrong, f"(config, expected): {wrong}"


@pytest.mark.parametrize("stem", sorted(PAPER_CONFIGS))
def test_paper_config_is_its_recipe_and_states_the_papers_figure(stem):
    config, text = _load(stem)
    model, dataset, dropout, figure = PAPER_CONFIGS[stem]
    recipe = CIFAR if dataset.startswith("cifar") else IMAGENET
    _check(config, {**recipe, "model": model, "dataset": dataset, "dropout_rate": dropout})
    assert config.share is None and config.stage_impl is None and config.remat is None
    assert re.search(r"Paper's figure: " + re.escape(figure), text), figure
    assert ("the author's own" in text) == ("share" in model)


def test_default_config_is_the_offline_digits_run():
    config, text = _load("default")
    _check(config, dict(model="cifar_sharesnet20", dataset="digits", batch_size=64,
                        learning_rate=0.2, learning_rate_batch_size=128, schedule="cosine",
                        warmup_epochs=1.0, num_epochs=15.0, optimizer="sgd", nesterov=True,
                        download=False, shuffle_buffer=0))
    assert "Expected: >= 97% test accuracy" in text


def test_synthetic_benchmark_config_makes_data_on_the_device():
    config, _ = _load("synthetic_benchmark")
    _check(config, dict(dataset="synthetic", image_size=224, num_classes=1000, dtype="bfloat16",
                        model="resnet50"))
