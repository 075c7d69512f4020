"""Converts variables between the two stage layouts, so checkpoints interchange.

`stage_impl='loop'` keeps every block of a stage under its own name::

    stageK/block1/..., stageK/block2/..., ..., stageK/blockN/...

`stage_impl='scan'` keeps block 1 as it is and stacks blocks 2..N along a new leading axis::

    stageK/block1/..., stageK/scanned_blocks/...   (every leaf: shape (N-1, *block_shape))

`stageK/shared_conv3x3/kernel` and everything outside the stages is the same in both. The
conversion is exact (a stack and its inverse), so a round trip is the identity.

It works on any tree that contains model-shaped dictionaries: `{'params': ..., 'batch_stats':
...}`, a bare params dict, an optax state (its moments mirror params), a flax `TrainState`, and
abstract trees of `jax.ShapeDtypeStruct` (e.g. an Orbax restore target). Every dictionary that
holds a `stageK` key is treated as a model-level dictionary; everything else passes through.

    from sharesnet_jax.models.stage_layout import to_scan_layout, to_loop_layout
    scan_vars = to_scan_layout(loop_vars)     # then model.clone(stage_impl="scan").apply(...)
    loop_vars = to_loop_layout(scan_vars)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharesnet_jax.errors import not_one_of
from sharesnet_jax.models.stage import SCANNED_BLOCKS, STAGE_IMPLS

_STAGE = re.compile(r"stage\d+")
_BLOCK = re.compile(r"block(\d+)")


def convert_stage_layout(tree: Any, to: str) -> Any:
    """Returns `tree` with every stage in layout `to` ('scan' or 'loop').

    Stages already in that layout, and stages of a single block (identical in both layouts),
    are left as they are. Arrays keep their kind: numpy stays numpy, jax stays jax (stacking
    copies; a sharded jax array comes back replicated on its default placement).
    """
    if to not in STAGE_IMPLS:
        raise ValueError(not_one_of("to", to, STAGE_IMPLS))
    convert_stage = _stage_to_scan if to == "scan" else _stage_to_loop

    def convert_model_dict(node: Any) -> Any:
        if not _is_model_dict(node):
            return node
        out = {key: convert_stage(key, value) if _STAGE.fullmatch(str(key)) else value
               for key, value in node.items()}
        return _like(node, out)

    return jax.tree.map(convert_model_dict, tree, is_leaf=_is_model_dict)


def to_scan_layout(tree: Any) -> Any:
    """Stacks blocks 2..N of every stage under `scanned_blocks` (see `convert_stage_layout`)."""
    return convert_stage_layout(tree, "scan")


def to_loop_layout(tree: Any) -> Any:
    """Unstacks `scanned_blocks` of every stage into `block2..blockN` (`convert_stage_layout`)."""
    return convert_stage_layout(tree, "loop")


def _is_model_dict(node: Any) -> bool:
    return isinstance(node, Mapping) and any(_STAGE.fullmatch(str(key)) for key in node)


def _like(template: Mapping, items: dict) -> Mapping:
    """A dict of the template's mapping type (plain dict or FrozenDict)."""
    return items if type(template) is dict else type(template)(items)


def _stage_to_scan(stage_name: str, stage: Mapping) -> Mapping:
    if SCANNED_BLOCKS in stage:
        if any(_block_number(key) and _block_number(key) > 1 for key in stage):
            raise ValueError(f"{stage_name} holds both {SCANNED_BLOCKS!r} and blocks 2..N")
        return stage
    numbers = sorted(n for n in map(_block_number, stage) if n and n > 1)
    if not numbers:
        return stage  # a one-block stage has no scanned tail
    if numbers != list(range(2, len(numbers) + 2)):
        raise ValueError(f"{stage_name}: blocks 2..N must be contiguous, got "
                         f"{', '.join(f'block{n}' for n in numbers)}")
    tail = [stage[f"block{n}"] for n in numbers]
    out = {key: value for key, value in stage.items() if not (_block_number(key) or 0) > 1}
    out[SCANNED_BLOCKS] = jax.tree.map(_stack, *tail)
    return _like(stage, out)


def _stage_to_loop(stage_name: str, stage: Mapping) -> Mapping:
    if SCANNED_BLOCKS not in stage:
        return stage
    tail = stage[SCANNED_BLOCKS]
    lengths = {_leading(leaf) for leaf in jax.tree.leaves(tail)}
    if len(lengths) != 1:
        raise ValueError(f"{stage_name}/{SCANNED_BLOCKS}: leaves disagree on the number of "
                         f"stacked blocks: {sorted(lengths)}")
    (length,) = lengths
    out = {key: value for key, value in stage.items() if key != SCANNED_BLOCKS}
    for index in range(length):
        name = f"block{index + 2}"
        if name in out:
            raise ValueError(f"{stage_name} holds both {SCANNED_BLOCKS!r} and {name!r}")
        out[name] = jax.tree.map(lambda leaf, i=index: _take(leaf, i), tail)
    return _like(stage, out)


def _block_number(key: Any) -> int | None:
    match = _BLOCK.fullmatch(str(key))
    return int(match.group(1)) if match else None


def _stack(*leaves: Any) -> Any:
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype)
    if isinstance(first, np.ndarray) or np.isscalar(first):
        return np.stack(leaves)
    return jnp.stack(leaves)


def _leading(leaf: Any) -> int:
    shape = np.shape(leaf) if not isinstance(leaf, jax.ShapeDtypeStruct) else leaf.shape
    if not shape:
        raise ValueError(f"a {SCANNED_BLOCKS} leaf is a scalar; it has no stacked axis")
    return shape[0]


def _take(leaf: Any, index: int) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
    return leaf[index]
