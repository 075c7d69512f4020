"""Flax Linen ResNets and ShaResNets. Imports jax, flax and numpy only.

How a stage shares its 3x3 convolution: the stage owns ONE kernel (`stageK/shared_conv3x3/kernel`),
created exactly as the `nn.Conv` of its blocks would create it (same initialiser, shape, dtype),
and hands that kernel to its blocks as an ARRAY argument; a slot that shares applies it with
`nn.Conv`'s arithmetic (`ResidualBlock.conv3x3`). So the kernel exists once in `params`, and its
gradient is the sum over its uses.

Why an array and not a shared module: a stage may run blocks 2..n under `nn.scan` and wrap
blocks in `nn.remat`. A module instance closed over by a scanned block is lifted with the block,
and with `variable_axes={'params': 0}` it silently gets its parameters stacked per iteration:
one kernel per block, shape (n-1, 3, 3, C, C), and no sharing at all (tests/models guards the
scanned layout against exactly that). An array argument crosses `nn.scan` (as an `nn.broadcast`
input) and `nn.remat` unchanged.

Layout: `stage` (the sharing path: `Stage`, its kernel, the slot rule), `blocks` (the four
residual blocks, each with its paper rule), `layers` (conv/norm factories, the head), `resnets`
(the two skeletons), `registry` (named models and the facts of each family), `stage_layout`
(loop <-> scan variable layouts), `stats` (counts and MACs from shapes alone).
"""

from sharesnet_jax.models.blocks import BasicBlock, Bottleneck, PreActBasic, PreActBottleneck
from sharesnet_jax.models.layers import ModuleDef
from sharesnet_jax.models.registry import (
    FAMILIES, FamilySpec, ModelSpec, create_model, family_of, list_models, model_spec,
)
from sharesnet_jax.models.resnets import PreActResNet, ResNet
from sharesnet_jax.models.stage import REMAT_POLICIES, SHARE_MODES, STAGE_IMPLS, Stage
from sharesnet_jax.models.stage_layout import convert_stage_layout, to_loop_layout, to_scan_layout

__all__ = [
    "BasicBlock", "Bottleneck", "FAMILIES", "FamilySpec", "ModelSpec", "PreActBasic",
    "PreActBottleneck", "PreActResNet", "REMAT_POLICIES", "ResNet", "SHARE_MODES", "STAGE_IMPLS", "ModuleDef",
    "Stage", "convert_stage_layout", "create_model", "family_of", "list_models", "model_spec",
    "to_loop_layout", "to_scan_layout",
]
