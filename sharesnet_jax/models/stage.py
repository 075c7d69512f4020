"""The sharing path: a `Stage` owns one 3x3 kernel, the slot rule says which block slots apply it,
and each block applies it itself (`ResidualBlock.conv3x3`). Why the kernel travels as an array,
not as a shared module: `models/__init__.py`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
from flax.core import FrozenDict

from sharesnet_jax.errors import check_one_of
from sharesnet_jax.models.layers import ModuleDef

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


def _saves_collectives(primitive, *_, **__) -> bool:
    return primitive is jax.lax.psum_p


_CHECKPOINT_POLICIES = {
    "full": _saves_collectives,
    "conv_outputs": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, _saves_collectives),
}


def shares_slot(block: nn.Module, slot: str, in_width: int) -> bool:
    """The slot rule: does 3x3 slot `slot` of `block`, reading `in_width` channels, apply the
    stage's kernel? 'paper': the slots the block's class names (`paper_shared_slots`, the
    author's rule for its family); 'all': every slot whose kernel would have the shared kernel's
    shape (features -> features; a 3x3 slot always outputs `features`)."""
    if block.share == "paper":
        return slot in block.paper_shared_slots(block.block_index, block.strides)
    return block.share == "all" and in_width == block.features


def owns_shared_kernel(share: str, block: type, num_blocks: int, strides: int) -> bool:
    """Whether some block of the stage shares a slot. Under 'all' every block does (its last 3x3
    reads `features`); under 'paper' blocks 2..n follow block 2's rule (same width, stride 1)."""
    if share == "paper":
        return any(block.paper_shared_slots(index, strides if index == 0 else 1)
                   for index in range(min(num_blocks, 2)))
    return share == "all"


class SharedConv3x3(nn.Module):
    """The stage's kernel (`stageK/shared_conv3x3/kernel`), made as the `nn.Conv` of `conv` would
    make its own: same initialiser, dtype and, by the same path, the same initial values."""

    conv: ModuleDef
    features: int

    @nn.compact
    def __call__(self) -> jax.Array:
        like = self.conv(self.features, (3, 3), parent=None)
        shape = (3, 3, self.features, self.features)
        return self.param("kernel", like.kernel_init, shape, like.param_dtype)


class Stage(nn.Module):
    """A run of blocks at one width, owning the 3x3 kernel its sharing blocks apply.

    stage_impl='loop' calls `block1..blockN` in turn. stage_impl='scan' calls `block1` (it may
    change width and stride), then blocks 2..n as ONE `nn.scan` over a block named
    `SCANNED_BLOCKS`: every variable collection is stacked along a leading axis of length n-1,
    the 'params' and 'dropout' RNGs are split per block, and the kernel is an `nn.broadcast`
    argument. A `remat_policy` other than 'none' wraps the block class in `nn.remat` (train is
    a static argument) under both. `block_options` (the family's `act`, `dropout_rate`) go to
    every block.
    """

    block: type
    num_blocks: int
    features: int
    strides: int
    share: str
    conv: ModuleDef
    norm: ModuleDef
    stage_impl: str = "loop"
    remat_policy: str = "none"
    block_options: Mapping[str, Any] = FrozenDict()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_one_of("share", self.share, SHARE_MODES)
        check_one_of("stage_impl", self.stage_impl, STAGE_IMPLS)
        check_one_of("remat_policy", self.remat_policy, REMAT_POLICIES)
        kernel = None
        if owns_shared_kernel(self.share, self.block, self.num_blocks, self.strides):
            kernel = SharedConv3x3(self.conv, self.features, name="shared_conv3x3")()

        def make_block(index: int, name: str, scanned: bool = False) -> nn.Module:
            block_cls = self.block
            if self.remat_policy != "none":
                # train (argument 2, counting self) is a Python bool: static for jax.checkpoint.
                # Inside a scan the loop already keeps XLA from CSE-ing the recomputation away.
                block_cls = nn.remat(self.block, static_argnums=(2,), prevent_cse=not scanned,
                                     policy=_CHECKPOINT_POLICIES[self.remat_policy])
            return block_cls(features=self.features, strides=self.strides if index == 0 else 1,
                             conv=self.conv, norm=self.norm, share=self.share, block_index=index,
                             name=name, **self.block_options)

        scan = self.stage_impl == "scan" and self.num_blocks > 1
        for index in range(1 if scan else self.num_blocks):
            x = make_block(index, f"block{index + 1}")(x, train, kernel)
        if not scan:
            return x

        # Blocks 2..n: same width, stride 1, block_index 1 (so the same shared slots) each.
        def body(module, carry, shared_kernel):
            return module(carry, train, shared_kernel), None

        run_tail = nn.scan(
            body,
            variable_axes={True: 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.num_blocks - 1,
        )
        x, _ = run_tail(make_block(1, SCANNED_BLOCKS, scanned=True), x, kernel)
        return x
