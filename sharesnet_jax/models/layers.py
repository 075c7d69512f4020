"""Pieces every model family shares: initialisers, the conv/norm factories, the sharing rule and
the `Stage` that owns a shared kernel. Why the kernel travels as an array: `models/__init__.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharesnet_jax.errors import check_one_of
from sharesnet_jax.models.batch_norm import GroupBatchNorm
from sharesnet_jax.models.initialization import FB_RESNET_TORCH, Initialization

ModuleDef = Any

SHARE_MODES = ("none", "paper", "all")
STAGE_IMPLS = ("loop", "scan")
# What a block keeps for its backward pass (`Stage.remat_policy`):
# 'none'         everything JAX keeps by default (no rematerialisation);
# 'conv_outputs' the outputs of its convolutions: BatchNorm, ReLU and the adds are recomputed
#                from them, no convolution is;
# 'full'         only the block's input: the whole block is recomputed (one more forward).
# (In order of the memory they save.)
# Both rematerialising policies also keep the results of cross-device reductions (BatchNorm's
# global statistics), so the backward pass never repeats a collective.
REMAT_POLICIES = ("none", "conv_outputs", "full")

# Name of the scanned tail of a stage under stage_impl='scan': blocks 2..n, stacked on axis 0.
SCANNED_BLOCKS = "scanned_blocks"

# Explicit symmetric padding (not 'SAME') so strided convs and pools line up with torchvision's.
PAD_3X3 = ((1, 1), (1, 1))


def _saves_collectives(primitive, *_, **__) -> bool:
    return primitive is jax.lax.psum_p


_CHECKPOINT_POLICIES = {
    "full": _saves_collectives,
    "conv_outputs": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, _saves_collectives),
}


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


class SharedConv3x3(nn.Module):
    """The stage's shared 3x3 kernel (`stageK/shared_conv3x3/kernel`); a call returns the kernel.

    The kernel is created exactly as the `nn.Conv` of `conv` would create it (same initialiser,
    dtype, parameter path and so the same initial values), but blocks receive it as an ARRAY and
    apply it with `apply_conv3x3`. An array can cross Flax's lifted transforms (`nn.scan`
    broadcasts it into the scanned blocks, `nn.remat` checkpoints it), which a module owned by the
    stage cannot; its gradient is still the sum over all its uses.
    """

    conv: ModuleDef
    features: int

    @nn.compact
    def __call__(self) -> jax.Array:
        template = _conv3x3_template(self.conv, self.features)
        shape = (3, 3, self.features, self.features)
        return self.param("kernel", template.kernel_init, shape, template.param_dtype)


def _conv3x3_template(conv: ModuleDef, features: int, strides: int = 1) -> nn.Module:
    # parent=None: a detached module, never registered as a child of the caller.
    return conv(features, (3, 3), strides, padding=PAD_3X3, parent=None)


def apply_conv3x3(x: jax.Array, kernel: jax.Array, *, conv: ModuleDef,
                  strides: int = 1) -> jax.Array:
    """Applies a 3x3 kernel given as an array with `conv`'s exact semantics (dtype, padding,
    stride): it runs the very `nn.Conv` a block would own, functionally, so a shared slot computes
    what an unshared slot holding the same kernel computes, and `stats.forward_macs` still sees
    (and counts) every use."""
    template = _conv3x3_template(conv, kernel.shape[-1], strides)
    return template.apply({"params": {"kernel": kernel}}, x)


def conv3x3(
    x: jax.Array,
    *,
    conv: ModuleDef,
    features: int,
    strides: int,
    name: str,
    shared_kernel: jax.Array | None,
) -> jax.Array:
    """One 3x3 slot of a block: its own kernel, or the stage's shared kernel when one is given."""
    if shared_kernel is None:
        return conv(features, (3, 3), strides, padding=PAD_3X3, name=name)(x)
    return apply_conv3x3(x, shared_kernel, conv=conv, strides=strides)


def block_class(block: ModuleDef) -> type:
    """The block class behind a `functools.partial` of it (or the class itself)."""
    return block.func if isinstance(block, functools.partial) else block


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
    """A run of blocks at one width; owns the shared 3x3 kernel its eligible blocks call.

    stage_impl='loop' calls `block1..blockN` in turn. stage_impl='scan' calls `block1` (it may
    change width and stride), then blocks 2..n as ONE `nn.scan` over a block named
    `SCANNED_BLOCKS`: every variable collection is stacked along a leading axis of length n-1,
    the 'params' and 'dropout' RNGs are split per block, and the shared kernel is an
    `nn.broadcast` argument of the scanned body (or None when the tail shares nothing).
    A `remat_policy` other than 'none' wraps the block class in `nn.remat` with that policy
    (train is a static argument) under both.
    `block` is the block class, or a `functools.partial` of it carrying the family's options
    (activation, dropout), so every block of every stage is built the same way.
    """

    block: ModuleDef
    num_blocks: int
    features: int
    strides: int
    share: str
    conv: ModuleDef
    norm: ModuleDef
    stage_impl: str = "loop"
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_one_of("stage_impl", self.stage_impl, STAGE_IMPLS)
        check_one_of("remat_policy", self.remat_policy, REMAT_POLICIES)
        in_features = x.shape[-1]
        block_cls = block_class(self.block)
        slots_per_block = []
        for index in range(self.num_blocks):
            slots_per_block.append(
                shared_slots(
                    block_cls, self.share, index,
                    in_features if index == 0 else self.features * block_cls.expansion,
                    self.features, self.strides if index == 0 else 1,
                )
            )
        kernel = None
        if any(slots_per_block):
            kernel = SharedConv3x3(self.conv, self.features, name="shared_conv3x3")()

        scan = self.stage_impl == "scan" and self.num_blocks > 1

        def block(index: int, name: str, scanned: bool = False) -> nn.Module:
            make_block = self.block
            if self.remat_policy != "none":
                # train (argument 2, counting self) is a Python bool: static for jax.checkpoint.
                # Inside a scan the loop already keeps XLA from CSE-ing the recomputation away.
                options = self.block.keywords if isinstance(self.block, functools.partial) else {}
                make_block = functools.partial(
                    nn.remat(block_cls, static_argnums=(2,), prevent_cse=not scanned,
                             policy=_CHECKPOINT_POLICIES[self.remat_policy]), **options)
            return make_block(
                features=self.features,
                strides=self.strides if index == 0 else 1,
                conv=self.conv,
                norm=self.norm,
                shared_slots=slots_per_block[index],
                name=name,
            )

        for index in range(1 if scan else self.num_blocks):
            x = block(index, f"block{index + 1}")(
                x, train, kernel if slots_per_block[index] else None)
        if not scan:
            return x

        # Blocks 2..n: same in/out width, stride 1, block_index > 0, so the same shared slots.
        assert all(slots == slots_per_block[1] for slots in slots_per_block[1:])
        tail_kernel = kernel if slots_per_block[1] else None

        def body(module, carry, shared_kernel):
            return module(carry, train, shared_kernel), None

        run_tail = nn.scan(
            body,
            variable_axes={True: 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.num_blocks - 1,
        )
        x, _ = run_tail(block(1, SCANNED_BLOCKS, scanned=True), x, tail_kernel)
        return x


def logits_head(x: jax.Array, num_classes: int, dtype: Any, param_dtype: Any,
                initialization: Initialization = FB_RESNET_TORCH) -> jax.Array:
    """Global average pool + dense; logits come out in float32 so the loss is computed stably."""
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype,
                 kernel_init=initialization.head_kernel, name="head")(x)
    return jnp.asarray(x, jnp.float32)


Activation = Callable[[jax.Array], jax.Array]
