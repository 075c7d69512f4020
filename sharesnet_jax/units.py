"""Byte units, one definition for every report (planner, benchmarks, trainer errors)."""

from __future__ import annotations

# Binary prefixes as XLA's memory reports write them ("1.50G" is 1.5 * 2**30 bytes).
BINARY_PREFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50, "E": 2**60}
MIB = BINARY_PREFIXES["M"]
GIB = BINARY_PREFIXES["G"]


def gib(nbytes: float | None) -> str:
    return "?" if nbytes is None else f"{nbytes / GIB:.2f} GiB"


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.1f} MiB"
