"""The conv/norm factories and the head every model family builds from (the sharing path is in
stage.py)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharesnet_jax.models.batch_norm import GroupBatchNorm
from sharesnet_jax.models.initialization import FB_RESNET_TORCH, Initialization

ModuleDef = Any

# Explicit symmetric padding (not 'SAME') so strided convs and pools line up with torchvision's.
PAD_3X3 = ((1, 1), (1, 1))


def make_conv(dtype: Any, param_dtype: Any,
              initialization: Initialization = FB_RESNET_TORCH) -> ModuleDef:
    """Bias-free conv (BatchNorm follows every conv, so a bias is dead weight), initialised as
    the family's Torch code did."""
    return functools.partial(nn.Conv, use_bias=False, kernel_init=initialization.conv_kernel,
                             dtype=dtype, param_dtype=param_dtype)


def make_norm(train: bool, dtype: Any, param_dtype: Any,
              initialization: Initialization = FB_RESNET_TORCH, group_size: int = 0,
              axis_name: str | None = None) -> ModuleDef:
    """BatchNorm with Torch's defaults (running-average factor 0.1, eps 1e-5), as the paper
    trained; statistics over the whole batch, or over groups of `group_size` examples.
    `axis_name`: inside `shard_map`, average whole-batch statistics over that mesh axis (groups
    are formed within each device's shard; only their running averages are averaged)."""
    options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   param_dtype=param_dtype, scale_init=initialization.norm_scale,
                   axis_name=axis_name)
    if group_size:
        return functools.partial(GroupBatchNorm, group_size=group_size, **options)
    return functools.partial(nn.BatchNorm, **options)


def logits_head(x: jax.Array, num_classes: int, dtype: Any, param_dtype: Any,
                initialization: Initialization = FB_RESNET_TORCH) -> jax.Array:
    """Global average pool + dense; logits come out in float32 so the loss is computed stably."""
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype,
                 kernel_init=initialization.head_kernel, name="head")(x)
    return jnp.asarray(x, jnp.float32)

