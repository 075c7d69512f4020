"""Trained unshared weights -> the weights of the ShaResNet twin: each stage's shared kernel starts
as the mean of the kernels it replaces. Works for every family and both stage layouts.

    shared, report = shareify(variables, "resnet50", share="paper")   # -> sharesnet50 variables
    print(report)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from sharesnet_jax.interop.trees import (
    Path, check_fit, flatten, label, params_first, shape_of, unflatten,
)
from sharesnet_jax.errors import check_one_of
from sharesnet_jax.models import SHARE_MODES, create_model
from sharesnet_jax.models.stats import abstract_variables, count_params


class StageShare(NamedTuple):
    """What sharing did to one stage: `replaced` kernels became one, their mean."""

    stage: str
    replaced: int
    kernel_shape: tuple[int, ...]
    rel_distance: float


@dataclasses.dataclass(frozen=True)
class ShareReport:
    """Per-stage summary of `shareify`; iterates over its `StageShare` rows.

    rel_distance = sqrt(mean_i ||k_i - m||^2) / ||m||, with k_i the replaced kernels, m their mean
    and ||.|| the Frobenius norm: the RMS distance of the kernels from the kernel that replaces
    them, relative to its size. 0 means the kernels were identical and the shared net computes
    exactly what the unshared one did; near or above 1 means the mean is a poor stand-in and the
    shared net needs fine-tuning. (For n independent random kernels it is about sqrt(n - 1).)
    """

    model_name: str
    share: str
    stages: tuple[StageShare, ...]
    params_before: int
    params_after: int

    def __iter__(self) -> Iterator[StageShare]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> StageShare:
        return self.stages[index]

    def __str__(self) -> str:
        replaced = sum(s.replaced for s in self.stages)
        lines = [f"shareify {self.model_name} share={self.share!r}: {replaced} kernels -> "
                 f"{len(self.stages)} shared; params {self.params_before:,} -> "
                 f"{self.params_after:,}"]
        rows = [("stage", "replaced", "kernel shape", "rel. distance")]
        rows += [(s.stage, str(s.replaced), str(s.kernel_shape), f"{s.rel_distance:.4g}")
                 for s in self.stages]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.append("  rel. distance = sqrt(mean_i ||k_i - mean||^2) / ||mean|| (0: identical)")
        return "\n".join(lines)


def relative_distance(kernels: np.ndarray) -> float:
    """sqrt(mean_i ||k_i - m||^2) / ||m|| over axis 0 (see ShareReport); 0/0 counts as 0."""
    kernels = np.asarray(kernels, np.float64)
    mean = kernels.mean(axis=0)
    spread = math.sqrt(float(np.mean(np.sum((kernels - mean) ** 2, axis=tuple(
        range(1, kernels.ndim))))))
    size = float(np.linalg.norm(mean))
    if spread == 0.0:
        return 0.0
    return spread / size if size > 0 else math.inf


def _twin_trees(model_name: str, share: str, num_classes: int,
                overrides: Mapping[str, Any]) -> tuple[dict[Path, Any], dict[Path, Any]]:
    """Abstract flat variables of the unshared model and of its twin under `share`."""
    plain = create_model(model_name, num_classes=num_classes, **{**overrides, "share": "none"})
    shared = create_model(model_name, num_classes=num_classes, **{**overrides, "share": share})
    return (params_first(flatten(abstract_variables(plain))),
            params_first(flatten(abstract_variables(shared))))


def _group_replaced(plain: Mapping[Path, Any],
                    shared: Mapping[Path, Any]) -> dict[Path, list[Path]]:
    """{shared kernel path: the unshared kernel paths it replaces}, by the stage that owns it.

    A replaced kernel is a path of the unshared tree that the shared tree lacks; it belongs to the
    shared kernel whose module (the stage) contains it. Under stage_impl='scan' one path holds
    the kernels of blocks 2..n stacked on leading axes, hence the suffix test on shapes.
    """
    added = [path for path in shared if path not in plain]
    removed = [path for path in plain if path not in shared]
    groups: dict[Path, list[Path]] = {path: [] for path in added}
    for path in removed:
        owners = [a for a in added if path[:len(a) - 2] == a[:-2]]
        kernel_shape = shape_of(shared[owners[0]]) if len(owners) == 1 else None
        if kernel_shape is None or shape_of(plain[path])[-len(kernel_shape):] != kernel_shape:
            raise ValueError(f"cannot tell which shared kernel replaces {'/'.join(path)}")
        groups[owners[0]].append(path)
    for path, members in groups.items():
        if not members:
            raise ValueError(f"{'/'.join(path)} replaces no kernel of the unshared model")
    return groups


def shareify(variables: Mapping[str, Any], model_name: str, share: str = "paper",
             **model_overrides: Any) -> tuple[dict[str, Any], ShareReport]:
    """Variables of a trained unshared net -> variables of its ShaResNet twin, and a report.

    Each stage's shared kernel starts as the mean of the kernels it replaces (the least-squares
    single kernel); every other parameter and BatchNorm statistic is copied. `model_name` may name
    the plain or the shared model of any family; `model_overrides` go to `create_model` (the
    stage layout too: stacked kernels of scanned stages are averaged with the rest), and
    num_classes is read from the head. Fine-tune afterwards unless the report's distances are ~0.
    """
    check_one_of("share", share, SHARE_MODES)
    flat = flatten(variables)
    head = flat.get(("params", "head", "kernel"))
    num_classes = model_overrides.pop("num_classes", None)
    if num_classes is None:
        if head is None:
            raise ValueError("variables have no 'params/head/kernel' to infer num_classes from")
        num_classes = shape_of(head)[-1]
    plain, shared = _twin_trees(model_name, share, num_classes, model_overrides)
    model_label = label(model_name, model_overrides)
    check_fit({"/".join(p): shape_of(v) for p, v in flat.items()},
               {"/".join(p): leaf.shape for p, leaf in plain.items()},
               f"variables do not fit the unshared {model_label}")
    groups = _group_replaced(plain, shared)
    out: dict[Path, Any] = {}
    stages = []
    for path, leaf in shared.items():
        if path not in groups:
            out[path] = jnp.asarray(flat[path])
            continue
        kernels = np.concatenate([np.asarray(flat[p], np.float64).reshape(-1, *leaf.shape)
                                  for p in groups[path]])
        out[path] = jnp.asarray(kernels.mean(axis=0), leaf.dtype)
        stages.append(StageShare("/".join(path[1:-2]), len(kernels), shape_of(leaf),
                                 relative_distance(kernels)))
    report = ShareReport(model_label, share, tuple(stages), count_params(unflatten(plain)["params"]),
                         count_params(unflatten(shared)["params"]))
    return unflatten(out), report
