"""Residual blocks: pre-activation (CIFAR ResNets, Wide ResNets) and post-activation (ImageNet).

Each block class states the paper's sharing rule for its family (`paper_shared_slots`); every
3x3 goes through `ResidualBlock.conv3x3`, which applies the block's own kernel or, where
`stage.shares_slot` says so, the stage's kernel passed in as the `shared_kernel` argument (an
array, so the same block runs in a Python loop, under `nn.scan` and under `nn.remat`).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax

from sharesnet_jax.models.layers import PAD_3X3, ModuleDef
from sharesnet_jax.models.stage import shares_slot


class ResidualBlock(nn.Module):
    """Fields and the 3x3 slot common to every block; subclasses add the wiring."""

    features: int  # width of the block's 3x3 convs; the block outputs features * expansion
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    share: str = "none"
    block_index: int = 0  # 0 for a stage's first block; the sharing rules ask nothing more
    act: Callable[[jax.Array], jax.Array] = nn.relu

    expansion = 1

    def conv3x3(self, x: jax.Array, slot: str, strides: int,
                shared_kernel: jax.Array | None) -> jax.Array:
        conv = functools.partial(self.conv, self.features, (3, 3), strides, padding=PAD_3X3)
        if not shares_slot(self, slot, x.shape[-1]):
            return conv(name=slot)(x)
        if shared_kernel is None:
            raise ValueError(f"{type(self).__name__} shares slot {slot!r} but got no shared_kernel")
        # The very nn.Conv the slot would own, run on the stage's kernel (parent=None: detached,
        # no variables of its own), so shared and own slots compute alike and MACs count each use.
        return conv(parent=None).apply({"params": {"kernel": shared_kernel}}, x)


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-1x1-BN-ReLU-3x3-BN-ReLU-1x1 (CIFAR ResNet-164/1001).

    The stride sits on the first 1x1, as in the author's code, so every 3x3 has stride 1. The
    first block of a stage widens the signal and its 1x1 projection reads the leading BN-ReLU.
    """

    expansion = 4

    @staticmethod
    def paper_shared_slots(block_index: int, strides: int) -> tuple[str, ...]:
        return ("conv2",) if block_index > 0 else ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool,
                 shared_kernel: jax.Array | None = None) -> jax.Array:
        out_features = self.features * self.expansion
        shortcut = x
        y = self.act(self.norm(name="bn1")(x))
        if x.shape[-1] != out_features or self.strides != 1:
            shortcut = self.conv(out_features, (1, 1), self.strides, name="proj_conv")(y)
        y = self.conv(self.features, (1, 1), self.strides, name="conv1")(y)
        y = self.act(self.norm(name="bn2")(y))
        y = self.conv3x3(y, "conv2", 1, shared_kernel)
        y = self.act(self.norm(name="bn3")(y))
        y = self.conv(out_features, (1, 1), name="conv3")(y)
        return y + shortcut


class PreActBasic(ResidualBlock):
    """BN-ReLU-3x3-BN-ReLU-[dropout]-3x3 (CIFAR ResNet-20/56/110 and Wide ResNets).

    The paper's Wide ShaResNet shares only the second 3x3, in blocks 2..n; the plain CIFAR basic
    ResNets have the same block and take the same rule.
    """

    dropout_rate: float = 0.0

    @staticmethod
    def paper_shared_slots(block_index: int, strides: int) -> tuple[str, ...]:
        return ("conv2",) if block_index > 0 else ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool,
                 shared_kernel: jax.Array | None = None) -> jax.Array:
        shortcut = x
        y = self.act(self.norm(name="bn1")(x))
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = self.conv(self.features, (1, 1), self.strides, name="proj_conv")(y)
        y = self.conv3x3(y, "conv1", self.strides, shared_kernel)
        y = self.act(self.norm(name="bn2")(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self.conv3x3(y, "conv2", 1, shared_kernel)
        return y + shortcut


class Bottleneck(ResidualBlock):
    """torchvision's ResNet-50/101/152 block: 1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1-BN, add, ReLU.

    Paper rule: every 3x3 of stride 1 is shared, so only the strided 3x3 opening stages 2-4 keeps
    its own kernel.
    """

    expansion = 4

    @staticmethod
    def paper_shared_slots(block_index: int, strides: int) -> tuple[str, ...]:
        return ("conv2",) if strides == 1 else ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool,
                 shared_kernel: jax.Array | None = None) -> jax.Array:
        out_features = self.features * self.expansion
        y = self.conv(self.features, (1, 1), name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv3x3(y, "conv2", self.strides, shared_kernel)
        y = self.act(self.norm(name="bn2")(y))
        y = self.conv(out_features, (1, 1), name="conv3")(y)
        y = self.norm(name="bn3")(y)
        shortcut = x
        if x.shape[-1] != out_features or self.strides != 1:
            shortcut = self.conv(out_features, (1, 1), self.strides, name="proj_conv")(x)
            shortcut = self.norm(name="proj_bn")(shortcut)
        return self.act(y + shortcut)


class BasicBlock(ResidualBlock):
    """torchvision's ResNet-18/34 block: 3x3(stride)-BN-ReLU-3x3-BN, add, ReLU.

    Paper rule: the second 3x3 of every block is shared, the first block's included.
    """

    @staticmethod
    def paper_shared_slots(block_index: int, strides: int) -> tuple[str, ...]:
        return ("conv2",)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool,
                 shared_kernel: jax.Array | None = None) -> jax.Array:
        y = self.conv3x3(x, "conv1", self.strides, shared_kernel)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv3x3(y, "conv2", 1, shared_kernel)
        y = self.norm(name="bn2")(y)
        shortcut = x
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = self.conv(self.features, (1, 1), self.strides, name="proj_conv")(x)
            shortcut = self.norm(name="proj_bn")(shortcut)
        return self.act(y + shortcut)
