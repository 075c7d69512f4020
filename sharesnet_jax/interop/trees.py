"""Flat views of Flax variable trees and the one-line report of a tree that does not fit, shared
by the torchvision conversion and `shareify`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import numpy as np

Path = tuple[str, ...]  # a Flax variable path: (collection, module..., leaf)

# Nested dict or FrozenDict <-> {path tuple: leaf}, in the tree's own order.
flatten = flax.traverse_util.flatten_dict
unflatten = flax.traverse_util.unflatten_dict


def params_first(flat: Mapping[Path, Any]) -> dict[Path, Any]:
    """Flax sorts collections ('batch_stats' before 'params'); a missing parameter is the more
    telling problem to report first, so put 'params' first (stable within each collection)."""
    return dict(sorted(flat.items(), key=lambda item: item[0][0] != "params"))


def shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(value))


def check_fit(actual: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
               what: str) -> None:
    """Raises a one-line ValueError naming the first missing, mis-shaped or unexpected entry.

    Missing and mis-shaped entries come first, in the model's order, as they usually point at the
    cause (a wrong architecture or class count); the message also counts the remaining problems.
    """
    problems: list[str] = []
    counts = {"missing": 0, "mis-shaped": 0, "unexpected": 0}
    for key, shape in expected.items():
        if key not in actual:
            problems.append(f"missing {key!r}")
            counts["missing"] += 1
        elif tuple(actual[key]) != tuple(shape):
            problems.append(f"{key!r} has shape {tuple(actual[key])}, expected {tuple(shape)}")
            counts["mis-shaped"] += 1
    for key in actual:
        if key not in expected:
            problems.append(f"unexpected {key!r}")
            counts["unexpected"] += 1
    if not problems:
        return
    more = ""
    if len(problems) > 1:
        more = " (" + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) + " in all)"
    raise ValueError(f"{what}: {problems[0]}{more}")


def label(model_name: str, overrides: Mapping[str, Any]) -> str:
    if not overrides:
        return model_name
    return f"{model_name}({', '.join(f'{k}={v!r}' for k, v in sorted(overrides.items()))})"
