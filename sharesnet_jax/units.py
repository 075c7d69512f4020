"""Byte units, one definition for every report (planner, benchmarks, trainer errors)."""

from __future__ import annotations

MIB = 2**20
GIB = 2**30


def gib(nbytes: float | None) -> str:
    return "?" if nbytes is None else f"{nbytes / GIB:.2f} GiB"


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.1f} MiB"
