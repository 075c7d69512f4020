"""What the compiler's text says: the out-of-memory figures of a failed compile, and the
collectives of a compiled program (all-reduce bytes per dtype, counted per loop iteration)."""

from __future__ import annotations

import math
import re

from sharesnet_jax.units import BINARY_PREFIXES


class OutOfMemory(Exception):
    """XLA's RESOURCE_EXHAUSTED at compile time, with the figures it gave (bytes, or None)."""

    def __init__(self, needed: int | None, available: int | None, message: str):
        super().__init__(message)
        self.needed, self.available = needed, available


# An absurd batch needs petabytes: XLA then prints 'P' (or 'E'), which must parse too.
_SIZE = r"([0-9.]+)\s*([KMGTPE]?)i?B?"


def _bytes(number: str, unit: str) -> int:
    return int(float(number) * BINARY_PREFIXES[unit])


def parse_out_of_memory(message: str) -> tuple[int | None, int | None]:
    """(needed, available) bytes from XLA's TPU out-of-memory message, whose wording varies:
    '... (23.97G) exceeds available HBM (15.75G)' or 'Used 23.97G of 15.75G hbm'."""
    for pattern in (rf"\({_SIZE}\)\s*exceeds available HBM\s*\({_SIZE}\)",
                    rf"Used\s+{_SIZE}\s+of\s+{_SIZE}\s+hbm"):
        match = re.search(pattern, message, re.IGNORECASE)
        if match:
            return _bytes(*match.group(1, 2)), _bytes(*match.group(3, 4))
    return None, None


# Byte widths of HLO element types.
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# A synchronous all-reduce, or the `-done` half of an async one: its result is what was reduced.
# (The `-start` half's result may also hold its operands: jax 0.12's CUDA compiler prints
# `((f32[N]), f32[N]) all-reduce-start(...)`, which counted twice.)
_ALL_REDUCE = re.compile(r"=\s*(.*?)\s+all-reduce(?:-done)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")


_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_WHILE = re.compile(r"\swhile\(.*?condition=%?([\w.\-]+),\s*body=%?([\w.\-]+)")
_CALLED = re.compile(r"(?:calls|to_apply|branch_computations)=\{?%?([\w.\-]+)")
_INT_CONSTANT = re.compile(r"[su]32\[\]\S*\s+constant\((\d+)\)")


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
    """{computation name: its lines} and the ENTRY computation's name."""
    bodies: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(2)
            bodies[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            bodies[current].append(line)
    return bodies, entry


def _trip_count(condition: list[str]) -> int | None:
    """A scan's while loop runs `i < N` from 0: N is the one integer constant of its condition."""
    constants = {int(n) for line in condition for n in _INT_CONSTANT.findall(line)}
    return constants.pop() if len(constants) == 1 else None


def _direct_all_reduce_bytes(lines: list[str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for line in lines:
        match = _ALL_REDUCE.search(line)
        if not match:
            continue
        for dtype, dims in _ARRAY.findall(match.group(1)):
            size = math.prod(int(d) for d in dims.split(",") if d)
            totals[dtype] = totals.get(dtype, 0) + int(size * _DTYPE_BYTES[dtype])
    return totals


def all_reduce_bytes(hlo_text: str) -> dict[str, int]:
    """{element type: bytes} summed over every all-reduce of the optimized HLO (`all-reduce` or
    the async pair's `all-reduce-done`; a combined all-reduce's tuple result counts each operand).
    These are the bytes each chip contributes per step: gradients, plus BatchNorm's batch
    statistics and the metrics, which are small.

    An all-reduce inside a while loop (scanned stages) runs once per iteration: it is counted
    as many times as the loop's trip count, read from its condition (once if unreadable)."""
    bodies, entry = _computations(hlo_text)
    if entry is None:  # a bare list of instructions (no computation headers)
        return _direct_all_reduce_bytes(hlo_text.splitlines())
    totals: dict[str, int] = {}

    def visit(name: str, times: int, path: tuple[str, ...]) -> None:
        if name not in bodies or name in path:
            return
        lines = bodies[name]
        for dtype, nbytes in _direct_all_reduce_bytes(lines).items():
            totals[dtype] = totals.get(dtype, 0) + nbytes * times
        for line in lines:
            loop = _WHILE.search(line)
            if loop:
                condition, body = loop.groups()
                visit(body, times * (_trip_count(bodies.get(condition, [])) or 1),
                      path + (name,))
                continue
            for called in _CALLED.findall(line):
                visit(called, times, path + (name,))

    visit(entry, 1, ())
    return totals


def other_collectives(hlo_text: str) -> list[str]:
    """Collectives other than all-reduce (a data-parallel step should have none)."""
    kinds = re.findall(r"\s(reduce-scatter|all-gather|all-to-all|collective-permute)(?:-start)?\(",
                       hlo_text)
    return sorted(set(kinds))
