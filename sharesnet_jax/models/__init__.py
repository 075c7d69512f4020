"""Flax Linen ResNets and ShaResNets. Imports jax, flax and numpy only."""

from sharesnet_jax.models.blocks import BasicBlock, Bottleneck, PreActBasic, PreActBottleneck
from sharesnet_jax.models.layers import SHARE_MODES, ModuleDef, Stage
from sharesnet_jax.models.registry import create_model, list_models
from sharesnet_jax.models.resnets import PreActResNet, ResNet

__all__ = [
    "BasicBlock", "Bottleneck", "PreActBasic", "PreActBottleneck", "PreActResNet", "ResNet",
    "SHARE_MODES", "ModuleDef", "Stage", "create_model", "list_models",
]
