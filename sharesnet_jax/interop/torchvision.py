"""Weight conversion between torchvision's ResNets and ours (the same layout, explicit padding).

    variables = from_torchvision("resnet50.pth", "resnet50")          # or a state_dict mapping
    state_dict = to_torchvision(variables, "resnet50")                 # numpy arrays, torch layout

Expected Flax trees come from `jax.eval_shape` of the model itself (no weights allocated), so the
conversion follows the model code instead of a hand-written table of layer names, and any input
that does not fit is rejected with a one-line ValueError naming the first bad entry.

Only jax, flax and numpy are imported here; torch is imported lazily, and only to read a .pth file.
Tensors are accepted as numpy arrays, torch tensors or anything `np.asarray` understands.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from sharesnet_jax.interop.trees import (
    Path, check_fit, flatten, label, params_first, shape_of, unflatten,
)
from sharesnet_jax.models import ResNet, create_model
from sharesnet_jax.models.stats import abstract_variables

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


def _torchshape_of(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
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
        try:
            import torch  # lazy: only reading a .pth file needs torch
        except ImportError:
            raise ValueError(f"reading {os.fspath(source)!r} needs torch, which is not "
                             'installed: pip install -e ".[torch]"') from None
        try:
            source = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - truncated, not a torch file, pickled code
            first = (str(err).strip().splitlines() or [""])[0][:160]
            raise ValueError(f"{os.fspath(source)!r} is not a readable torch state dict "
                             f"({type(err).__name__}: {first})") from None
        if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
            source = source["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state dict (name -> tensor) or a .pth path, got "
                         f"{type(source).__name__}")
    return source


def _numeric_shape(key: str, value: Any) -> tuple[int, ...]:
    """The shape of a tensor or array of numbers; anything else is a one-line ValueError."""
    try:
        array = _to_numpy(value)
    except Exception as err:  # noqa: BLE001 - ragged lists, objects numpy cannot take
        raise ValueError(f"state dict entry {key!r} is not a tensor or array "
                         f"({type(value).__name__}: {type(err).__name__})") from None
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"state dict entry {key!r} holds {type(value).__name__} of dtype "
                         f"{array.dtype}, not a tensor of numbers")
    return shape_of(array)


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
        num_classes = shape_of(state_dict["fc.weight"])[0]
    model = _torchvision_model(model_name, num_classes, model_overrides)
    expected = flatten(abstract_variables(model))
    keys = {path: _torch_key(path) for path in expected}
    in_torch_order = sorted(expected, key=lambda path: _torch_rank(keys[path]))
    wanted = {keys[path]: _torchshape_of(expected[path].shape) for path in in_torch_order}
    counters = set(_batchnorm_counters(expected))
    given = {k: _numeric_shape(k, v) for k, v in state_dict.items() if k not in counters}
    check_fit(given, wanted, f"state dict does not fit {label(model_name, model_overrides)} "
                              f"(num_classes={num_classes})")
    flat = {
        path: jnp.asarray(_from_torch_layout(_to_numpy(state_dict[keys[path]])), leaf.dtype)
        for path, leaf in expected.items()
    }
    return unflatten(flat)


def to_torchvision(variables: Mapping[str, Any], model_name: str,
                   **model_overrides: Any) -> dict[str, np.ndarray]:
    """Our Flax variables -> a torchvision `state_dict` of numpy arrays in torch's layout.

    It loads with `load_state_dict(..., strict=True)` once wrapped by `torch.from_numpy`; each
    BatchNorm gets a `num_batches_tracked` of 0 (int64), which torch only reads when its
    momentum is None.
    """
    flat = flatten(variables)
    head = flat.get(("params", "head", "kernel"))
    if head is None:
        raise ValueError("variables have no 'params/head/kernel' to infer num_classes from")
    model = _torchvision_model(model_name, shape_of(head)[-1], model_overrides)
    expected = params_first(flatten(abstract_variables(model)))
    check_fit({"/".join(p): shape_of(v) for p, v in flat.items()},
               {"/".join(p): leaf.shape for p, leaf in expected.items()},
               f"variables do not fit {label(model_name, model_overrides)}")
    state_dict = {}
    for path in expected:
        # A writable C-order copy: torch.from_numpy warns on (and cannot own) read-only views.
        array = _to_torch_layout(_host_array(flat[path]))
        state_dict[_torch_key(path)] = np.array(array, order="C", copy=True)
        if path[0] == "batch_stats" and path[-1] == "var":  # torch orders the counter last
            state_dict[_torch_key(path).rsplit(".", 1)[0] + "." + _NUM_BATCHES] = np.array(
                0, np.int64)
    return _order_like_torch(state_dict)
