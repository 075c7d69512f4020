"""Flax Linen ResNets and ShaResNets. Imports jax, flax and numpy only."""

from sharesnet_jax.models.blocks import BasicBlock, Bottleneck, PreActBasic, PreActBottleneck
from sharesnet_jax.models.layers import SHARE_MODES, ModuleDef, Stage
from sharesnet_jax.models.registry import create_model, list_models
from sharesnet_jax.models.resnets import PreActResNet, ResNet
from sharesnet_jax.models.stage_layout import convert_stage_layout, to_loop_layout, to_scan_layout

__all__ = [
    "BasicBlock", "Bottleneck", "PreActBasic", "PreActBottleneck", "PreActResNet", "ResNet",
    "SHARE_MODES", "ModuleDef", "Stage", "convert_stage_layout", "create_model", "list_models",
    "to_loop_layout", "to_scan_layout",
]
