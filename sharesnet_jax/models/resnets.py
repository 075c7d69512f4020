"""The two network skeletons: pre-activation CIFAR nets and post-activation ImageNet nets.

Both are a stem, a sequence of `Stage`s and a head; the block class and the per-stage sizes pick
the family (see `registry.py` for the named models).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharesnet_jax.models.initialization import FB_RESNET_TORCH, Initialization
from sharesnet_jax.models.layers import PAD_3X3, ModuleDef, logits_head, make_conv, make_norm
from sharesnet_jax.models.stage import Stage


class ResidualNetwork(nn.Module):
    """Fields common to every family; subclasses add their stem and head around the stages."""

    block_cls: ModuleDef
    stage_sizes: Sequence[int]
    num_classes: int
    share: str = "none"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    act: Callable[[jax.Array], jax.Array] = nn.relu
    # 'loop' runs blocks 1..n in turn; 'scan' runs blocks 2..n of each stage as one nn.scan
    # (compiles in constant time on accelerators; its gradients are 30-50x slower on XLA:CPU).
    # The variable layouts differ; stage_layout.convert_stage_layout maps one onto the other.
    stage_impl: str = "loop"
    # What each block keeps for the backward pass: 'none', 'full' (recompute the block) or
    # 'conv_outputs' (recompute all but its convolutions); see stage.REMAT_POLICIES. A scanned
    # stage keeps every residual of its body, so 'none' costs it 3-4x the unrolled memory.
    remat_policy: str = "none"
    # The family's initialisation (its registry entry sets it; see initialization.py).
    initialization: Initialization = FB_RESNET_TORCH
    # BatchNorm statistics over groups of this many examples in training (0: the whole batch),
    # as data-parallel Torch code computes them per GPU (batch_norm.py).
    bn_group_size: int = 0
    # Inside `shard_map` (steps' grad_reduce_dtype='float32'), BatchNorm averages its batch
    # statistics over this mesh axis, so they stay those of the global batch. Adds no variables.
    norm_axis_name: str | None = None

    def conv_and_norm(self, train: bool) -> tuple[ModuleDef, ModuleDef]:
        return (make_conv(self.dtype, self.param_dtype, self.initialization),
                make_norm(train, self.dtype, self.param_dtype, self.initialization,
                          self.bn_group_size, self.norm_axis_name))

    # Not named `head`: that is the name of the dense layer's variables, and Flax NNX's
    # `nnx.bridge.ToNNX` looks variable names up as attributes, where a method of that name
    # would shadow them (models/nnx.py).
    def classify(self, x: jax.Array) -> jax.Array:
        return logits_head(x, self.num_classes, self.dtype, self.param_dtype, self.initialization)

    def stages(self, x: jax.Array, train: bool, stage_strides: Sequence[int], conv: ModuleDef,
               norm: ModuleDef, **block_options) -> jax.Array:
        """`stage1..stageK`, one per entry of `stage_sizes` (Stage checks the sharing options)."""
        for index, (num_blocks, features, strides) in enumerate(
            zip(self.stage_sizes, self.stage_features, stage_strides)
        ):
            x = Stage(block=self.block_cls, num_blocks=num_blocks, features=features,
                      strides=strides, share=self.share, conv=conv, norm=norm,
                      stage_impl=self.stage_impl, remat_policy=self.remat_policy,
                      block_options=block_options, name=f"stage{index + 1}")(x, train)
        return x


class PreActResNet(ResidualNetwork):
    """CIFAR pre-activation ResNet (He et al. 2016) and Wide ResNet (Zagoruyko & Komodakis 2016).

    3x3 stem to 16 channels, three stages at strides 1, 2, 2, then BN-ReLU, global average pool
    and a dense layer. `stage_features` are the 3x3 widths (the bottleneck outputs 4x that).
    """

    stage_features: Sequence[int] = (16, 32, 64)
    stem_features: int = 16
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv, norm = self.conv_and_norm(train)
        options = {"dropout_rate": self.dropout_rate} if self.dropout_rate else {}
        x = jnp.asarray(x, self.dtype)
        x = conv(self.stem_features, (3, 3), padding=PAD_3X3, name="stem_conv")(x)
        x = self.stages(x, train, (1, 2, 2), conv, norm, act=self.act, **options)
        x = self.act(norm(name="final_bn")(x))
        return self.classify(x)


class ResNet(ResidualNetwork):
    """ImageNet ResNet in torchvision's layout, so its weights map one to one.

    7x7/2 stem conv + BN + ReLU + 3x3/2 max-pool, four stages at widths 64..512 (strides 1, 2, 2,
    2; the stride sits on the 3x3), global average pool and a dense layer.
    """

    stage_features: Sequence[int] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv, norm = self.conv_and_norm(train)
        x = jnp.asarray(x, self.dtype)
        x = conv(self.stage_features[0], (7, 7), 2, padding=((3, 3), (3, 3)), name="stem_conv")(x)
        x = self.act(norm(name="stem_bn")(x))
        # torchvision's 3x3/2 max-pool with padding 1, written as a -inf pad then a VALID pool
        # (what nn.max_pool's explicit padding computes): converters such as jax2onnx accept
        # only 'SAME'/'VALID' pools, and SAME would pad 0 before and 1 after, not 1 and 1.
        x = jnp.pad(x, ((0, 0), *PAD_3X3, (0, 0)), constant_values=-jnp.inf)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
        x = self.stages(x, train, (1, 2, 2, 2), conv, norm, act=self.act)
        return self.classify(x)
