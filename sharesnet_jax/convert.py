"""Weight conversion: torchvision ResNets <-> our Flax ResNets, and trained nets -> ShaResNets.

    variables = from_torchvision("resnet50.pth", "resnet50")          # or a state_dict mapping
    state_dict = to_torchvision(variables, "resnet50")                 # numpy arrays, torch layout
    shared, report = shareify(variables, "resnet50", share="paper")   # -> sharesnet50 variables
    print(report)

Expected Flax trees come from `jax.eval_shape` of the model itself (no weights allocated), so the
conversion follows the model code instead of a hand-written table of layer names, and any input
that does not fit is rejected with a one-line ValueError naming the first bad entry.

Only jax, flax and numpy are imported here; torch is imported lazily, and only to read a .pth file.
Tensors are accepted as numpy arrays, torch tensors or anything `np.asarray` understands.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import flax
import jax.numpy as jnp
import numpy as np

from sharesnet_jax.models import ResNet, create_model
from sharesnet_jax.models.layers import check_share
from sharesnet_jax.models.stats import abstract_variables, count_params

Path = tuple[str, ...]  # a Flax variable path: (collection, module..., leaf)

# Our module names that torchvision spells differently; conv1..3 and bn1..3 are spelled alike.
_MODULE_TO_TORCH = {
    "stem_conv": "conv1",
    "stem_bn": "bn1",
    "head": "fc",
    "proj_conv": "downsample.0",
    "proj_bn": "downsample.1",
}
_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_NUM_BATCHES = "num_batches_tracked"


# ----------------------------------------------------------------------------- tree helpers


# Nested dict or FrozenDict <-> {path tuple: leaf}, in the tree's own order.
_flatten = flax.traverse_util.flatten_dict
_unflatten = flax.traverse_util.unflatten_dict


def _params_first(flat: Mapping[Path, Any]) -> dict[Path, Any]:
    """Flax sorts collections ('batch_stats' before 'params'); a missing parameter is the more
    telling problem to report first, so put 'params' first (stable within each collection)."""
    return dict(sorted(flat.items(), key=lambda item: item[0][0] != "params"))


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(value))


def _check_fit(actual: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
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


def _to_numpy(value: Any) -> np.ndarray:
    """Tensor or array -> numpy, without importing torch (duck-typed on `.detach()`)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _host_array(value: Any) -> np.ndarray:
    """Flax leaf -> numpy in a dtype torch can take (bfloat16 params are widened to float32)."""
    array = np.asarray(value)
    if array.dtype not in (np.float16, np.float32, np.float64):
        array = array.astype(np.float32)
    return array


# ----------------------------------------------------------------------------- model resolution


def _label(model_name: str, overrides: Mapping[str, Any]) -> str:
    if not overrides:
        return model_name
    return f"{model_name}({', '.join(f'{k}={v!r}' for k, v in sorted(overrides.items()))})"


def _torchvision_model(model_name: str, num_classes: int, overrides: Mapping[str, Any]) -> ResNet:
    """Builds the model; only unshared, looped ImageNet ResNets have torchvision's layout."""
    model = create_model(model_name, num_classes=num_classes, **overrides)
    if not isinstance(model, ResNet):
        raise ValueError(f"{model_name!r} is a {type(model).__name__}; torchvision conversion "
                         "covers the ImageNet nets resnet18/34/50/101/152 only")
    if model.share != "none":
        raise ValueError(f"{model_name!r} has share={model.share!r}; torchvision nets are "
                         "unshared: convert the plain resnet, then call shareify()")
    if getattr(model, "stage_impl", "loop") != "loop":
        raise ValueError(f"torchvision conversion needs stage_impl='loop', not "
                         f"{model.stage_impl!r}; convert the stage layout afterwards")
    return model


# ----------------------------------------------------------------------------- torchvision layout


def _torch_key(path: Path) -> str:
    """('params', 'stage2', 'block1', 'proj_bn', 'scale') -> 'layer2.0.downsample.1.weight'."""
    *modules, leaf = path[1:]
    parts = []
    for module in modules:
        if module in _MODULE_TO_TORCH:
            parts.append(_MODULE_TO_TORCH[module])
        elif re.fullmatch(r"stage\d+", module):
            parts.append("layer" + module[len("stage"):])
        elif re.fullmatch(r"block\d+", module):
            parts.append(str(int(module[len("block"):]) - 1))
        elif re.fullmatch(r"(conv|bn)\d", module):
            parts.append(module)
        else:
            raise ValueError(f"{'/'.join(path)} has no torchvision counterpart")
    return ".".join([*parts, _LEAF_TO_TORCH[leaf]])


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a leaf in torch's layout: conv HWIO -> OIHW, dense (in, out) -> (out, in)."""
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return flax_shape


def _from_torch_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if array.ndim == 2:
        return array.T  # (out, in) -> (in, out)
    return array


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if array.ndim == 2:
        return array.T
    return array


def _batchnorm_counters(expected: Mapping[Path, Any]) -> list[str]:
    """torchvision's `<bn>.num_batches_tracked` key of every BatchNorm of the model."""
    return [
        _torch_key(path).rsplit(".", 1)[0] + "." + _NUM_BATCHES
        for path in expected
        if path[0] == "batch_stats" and path[-1] == "mean"
    ]


def _order_like_torch(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flax sorts params and batch_stats apart; torch lists each module's tensors together, in
    construction order. Restore that order so printed dicts and saved files read like
    torchvision's own (loading ignores order)."""
    return {key: state_dict[key] for key in sorted(state_dict, key=_torch_rank)}


_TORCH_PART_RANK = {"conv1": 0, "bn1": 1, "conv2": 2, "bn2": 3, "conv3": 4, "bn3": 5,
                    "downsample": 6, "fc": 10**6, "weight": 0, "bias": 1, "running_mean": 2,
                    "running_var": 3, _NUM_BATCHES: 4}


def _torch_rank(key: str) -> tuple[int, ...]:
    """'layer2.0.downsample.1.bias' -> (7, 0, 6, 1, 1): torchvision's construction order."""
    rank = []
    for part in key.split("."):
        if part.isdigit():
            rank.append(int(part))
        elif re.fullmatch(r"layer\d+", part):
            rank.append(2 + int(part[len("layer"):]))
        else:
            rank.append(_TORCH_PART_RANK[part])
    return tuple(rank)


def _load_state_dict(source: Any) -> Mapping[str, Any]:
    """A mapping as is; a path is read with torch.load (tensors only, CPU)."""
    if isinstance(source, (str, os.PathLike)):
        import torch  # lazy: only reading a .pth file needs torch

        source = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
        if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
            source = source["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state dict (name -> tensor) or a .pth path, got "
                         f"{type(source).__name__}")
    return source


def from_torchvision(state_dict: Mapping[str, Any] | str | os.PathLike, model_name: str,
                     num_classes: int | None = None, **model_overrides: Any) -> dict[str, Any]:
    """torchvision ResNet weights -> our Flax variables {'params', 'batch_stats'}.

    `state_dict` is a torchvision `state_dict()` (tensors or arrays) or the path of a .pth file
    holding one. `num_classes` defaults to the rows of `fc.weight`. `model_overrides` are passed
    to `create_model` (e.g. `stage_features` for a slimmed net). `num_batches_tracked` counters
    are accepted and dropped: Flax's BatchNorm keeps no counter.
    """
    state_dict = _load_state_dict(state_dict)
    if num_classes is None:
        if "fc.weight" not in state_dict:
            raise ValueError("state dict has no 'fc.weight' to infer num_classes from; pass "
                             "num_classes")
        num_classes = _shape(state_dict["fc.weight"])[0]
    model = _torchvision_model(model_name, num_classes, model_overrides)
    expected = _flatten(abstract_variables(model))
    keys = {path: _torch_key(path) for path in expected}
    in_torch_order = sorted(expected, key=lambda path: _torch_rank(keys[path]))
    wanted = {keys[path]: _torch_shape(expected[path].shape) for path in in_torch_order}
    counters = set(_batchnorm_counters(expected))
    given = {k: _shape(v) for k, v in state_dict.items() if k not in counters}
    _check_fit(given, wanted, f"state dict does not fit {_label(model_name, model_overrides)} "
                              f"(num_classes={num_classes})")
    flat = {
        path: jnp.asarray(_from_torch_layout(_to_numpy(state_dict[keys[path]])), leaf.dtype)
        for path, leaf in expected.items()
    }
    return _unflatten(flat)


def to_torchvision(variables: Mapping[str, Any], model_name: str,
                   **model_overrides: Any) -> dict[str, np.ndarray]:
    """Our Flax variables -> a torchvision `state_dict` of numpy arrays in torch's layout.

    It loads with `load_state_dict(..., strict=True)` once wrapped by `torch.from_numpy`; each
    BatchNorm gets a `num_batches_tracked` of 0 (int64), which torch only reads when its
    momentum is None.
    """
    flat = _flatten(variables)
    head = flat.get(("params", "head", "kernel"))
    if head is None:
        raise ValueError("variables have no 'params/head/kernel' to infer num_classes from")
    model = _torchvision_model(model_name, _shape(head)[-1], model_overrides)
    expected = _params_first(_flatten(abstract_variables(model)))
    _check_fit({"/".join(p): _shape(v) for p, v in flat.items()},
               {"/".join(p): leaf.shape for p, leaf in expected.items()},
               f"variables do not fit {_label(model_name, model_overrides)}")
    state_dict = {}
    for path in expected:
        # A writable C-order copy: torch.from_numpy warns on (and cannot own) read-only views.
        array = _to_torch_layout(_host_array(flat[path]))
        state_dict[_torch_key(path)] = np.array(array, order="C", copy=True)
        if path[0] == "batch_stats" and path[-1] == "var":  # torch orders the counter last
            state_dict[_torch_key(path).rsplit(".", 1)[0] + "." + _NUM_BATCHES] = np.array(
                0, np.int64)
    return _order_like_torch(state_dict)


# ----------------------------------------------------------------------------- shareify


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
    return (_params_first(_flatten(abstract_variables(plain))),
            _params_first(_flatten(abstract_variables(shared))))


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
        kernel_shape = _shape(shared[owners[0]]) if len(owners) == 1 else None
        if kernel_shape is None or _shape(plain[path])[-len(kernel_shape):] != kernel_shape:
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
    check_share(share)
    flat = _flatten(variables)
    head = flat.get(("params", "head", "kernel"))
    num_classes = model_overrides.pop("num_classes", None)
    if num_classes is None:
        if head is None:
            raise ValueError("variables have no 'params/head/kernel' to infer num_classes from")
        num_classes = _shape(head)[-1]
    plain, shared = _twin_trees(model_name, share, num_classes, model_overrides)
    label = _label(model_name, model_overrides)
    _check_fit({"/".join(p): _shape(v) for p, v in flat.items()},
               {"/".join(p): leaf.shape for p, leaf in plain.items()},
               f"variables do not fit the unshared {label}")
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
        stages.append(StageShare("/".join(path[1:-2]), len(kernels), _shape(leaf),
                                 relative_distance(kernels)))
    report = ShareReport(label, share, tuple(stages), count_params(_unflatten(plain)["params"]),
                         count_params(_unflatten(shared)["params"]))
    return _unflatten(out), report
