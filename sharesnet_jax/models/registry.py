"""Named models: the paper's networks and their shared twins, built by `create_model`."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Callable

import flax.linen as nn

from sharesnet_jax.models.blocks import BasicBlock, Bottleneck, PreActBasic, PreActBottleneck
from sharesnet_jax.models.resnets import PreActResNet, ResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def _register(name: str, cls: type, **fields) -> None:
    _REGISTRY[name] = functools.partial(cls, **fields)


def _register_pair(plain: str, shared: str, cls: type, **fields) -> None:
    """Every network comes with its ShaResNet twin: same fields, share='paper'."""
    _register(plain, cls, share="none", **fields)
    _register(shared, cls, share="paper", **fields)


# CIFAR pre-activation basic ResNets, depth 6n+2: 3x3 widths 16, 32, 64.
for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register_pair(f"cifar_resnet{_depth}", f"cifar_sharesnet{_depth}", PreActResNet,
                   block_cls=PreActBasic, stage_sizes=((_depth - 2) // 6,) * 3,
                   stage_features=(16, 32, 64))

# CIFAR pre-activation bottleneck ResNets, depth 9n+2: 3x3 widths 16, 32, 64, outputs 4x.
for _depth in (164, 1001):
    _register_pair(f"cifar_resnet{_depth}", f"cifar_sharesnet{_depth}", PreActResNet,
                   block_cls=PreActBottleneck, stage_sizes=((_depth - 2) // 9,) * 3,
                   stage_features=(16, 32, 64))

# Wide ResNets WRN-d-k: n = (d-4)/6 blocks per stage at widths 16k, 32k, 64k.
for _depth, _k in ((16, 4), (16, 8), (22, 8), (28, 4), (28, 10), (40, 4)):
    _register_pair(f"wrn{_depth}_{_k}", f"sharewrn{_depth}_{_k}", PreActResNet,
                   block_cls=PreActBasic, stage_sizes=((_depth - 4) // 6,) * 3,
                   stage_features=(16 * _k, 32 * _k, 64 * _k))

# ImageNet ResNets, torchvision layout.
for _depth, _block, _sizes in (
    (18, BasicBlock, (2, 2, 2, 2)),
    (34, BasicBlock, (3, 4, 6, 3)),
    (50, Bottleneck, (3, 4, 6, 3)),
    (101, Bottleneck, (3, 4, 23, 3)),
    (152, Bottleneck, (3, 8, 36, 3)),
):
    _register_pair(f"resnet{_depth}", f"sharesnet{_depth}", ResNet, block_cls=_block,
                   stage_sizes=_sizes)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
    """Builds a registered model; `overrides` set module fields (dtype, share, dropout_rate...)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see sharesnet_jax.models.list_models())")
    factory = _REGISTRY[name]
    known = {f.name for f in dataclasses.fields(factory.func)} - {"parent", "name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model {name!r} has no field {unknown[0]!r}; its fields: "
                         f"{', '.join(sorted(known))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
    return factory(num_classes=num_classes, **overrides)
