"""Pieces every model family shares: initialisers, the conv/norm factories and the sharing rule.

A ShaResNet stage owns ONE 3x3 `nn.Conv` and hands that same instance to each eligible block
(Linen module reuse), so the kernel exists once in `params` and its gradient is the sum over its
uses. Which 3x3 convs are eligible is the paper's per-family rule; each block class states it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

SHARE_MODES = ("none", "paper", "all")

# N(0, 2 / (k*k*C_out)): the init of the author's Torch code and of torchvision (fan_out, ReLU gain).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# Explicit symmetric padding (not 'SAME') so strided convs and pools line up with torchvision's.
PAD_3X3 = ((1, 1), (1, 1))


def check_share(share: str) -> str:
    if share not in SHARE_MODES:
        raise ValueError(f"share={share!r} is not one of {', '.join(map(repr, SHARE_MODES))}")
    return share


def make_conv(dtype: Any, param_dtype: Any) -> ModuleDef:
    """Bias-free conv with He-normal init: BatchNorm follows every conv, so a bias is dead weight."""
    return functools.partial(
        nn.Conv, use_bias=False, kernel_init=conv_kernel_init, dtype=dtype, param_dtype=param_dtype
    )


def make_norm(train: bool, dtype: Any, param_dtype: Any) -> ModuleDef:
    """BatchNorm with Torch's defaults (running-average factor 0.1, eps 1e-5), as the paper trained."""
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=param_dtype,
    )


def conv3x3(
    x: jax.Array,
    *,
    conv: ModuleDef,
    features: int,
    strides: int,
    name: str,
    shared: nn.Module | None,
) -> jax.Array:
    """One 3x3 slot of a block: its own kernel, or the stage's shared conv when `shared` is given.

    The shared conv has stride 1. A strided slot that shares it (only under share='all') keeps every
    `strides`-th output, which equals a strided conv with the same symmetric padding exactly, at the
    cost of computing the skipped outputs.
    """
    if shared is None:
        return conv(features, (3, 3), strides, padding=PAD_3X3, name=name)(x)
    y = shared(x)
    return y[:, ::strides, ::strides, :] if strides > 1 else y


def shared_slots(
    block_cls: type,
    share: str,
    block_index: int,
    in_features: int,
    features: int,
    strides: int,
) -> tuple[str, ...]:
    """Names of the 3x3 slots of one block that call the stage's shared conv.

    'paper' is the author's rule, which each block class states in `paper_shared_slots`; 'all'
    takes every 3x3 slot whose kernel has the shared kernel's shape (features -> features).
    """
    if share == "none":
        return ()
    if share == "paper":
        return block_cls.paper_shared_slots(block_index, strides)
    shapes = block_cls.conv3x3_shapes(in_features, features)
    return tuple(slot for slot, shape in shapes.items() if shape == (features, features))


class Stage(nn.Module):
    """A run of blocks at one width; owns the shared 3x3 conv its eligible blocks call."""

    block_cls: ModuleDef
    num_blocks: int
    features: int
    strides: int
    share: str
    conv: ModuleDef
    norm: ModuleDef
    block_kwargs: Sequence[tuple[str, Any]] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        slots_per_block = []
        for index in range(self.num_blocks):
            slots_per_block.append(
                shared_slots(
                    self.block_cls, self.share, index,
                    in_features if index == 0 else self.features * self.block_cls.expansion,
                    self.features, self.strides if index == 0 else 1,
                )
            )
        shared = None
        if any(slots_per_block):
            shared = self.conv(self.features, (3, 3), 1, padding=PAD_3X3, name="shared_conv3x3")
        for index, slots in enumerate(slots_per_block):
            x = self.block_cls(
                features=self.features,
                strides=self.strides if index == 0 else 1,
                conv=self.conv,
                norm=self.norm,
                shared_conv=shared if slots else None,
                shared_slots=slots,
                name=f"block{index + 1}",
                **dict(self.block_kwargs),
            )(x, train)
        return x


def logits_head(x: jax.Array, num_classes: int, dtype: Any, param_dtype: Any) -> jax.Array:
    """Global average pool + dense; logits come out in float32 so the loss is computed stably."""
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype, name="head")(x)
    return jnp.asarray(x, jnp.float32)


Activation = Callable[[jax.Array], jax.Array]
