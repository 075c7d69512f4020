"""Starting a run from existing weights (`config.init_from`): a torchvision `.pth` file or a
checkpoint of this trainer, unshared weights made shared with `shareify` when the new model shares
kernels. This is our extension: the paper trained its ShaResNets from scratch, "exactly in the
same fashion" as the ResNets; fine-tuning a ShaResNet from a pretrained ResNet is a shortcut.

Only the model's variables carry over; the optimizer starts afresh. A classifier head of another
size (a new dataset) keeps its fresh initialisation.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import jax
import numpy as np

from sharesnet_jax.errors import UserError
from sharesnet_jax.interop.shareify import shareify
from sharesnet_jax.models import create_model, to_loop_layout, to_scan_layout
from sharesnet_jax.training.checkpoints import read_checkpoint

TORCH_SUFFIXES = (".pth", ".pt")


def _from_checkpoint(source: str) -> tuple[dict, str, dict]:
    """Variables (loop layout), model name and sharing recorded with the checkpoint."""
    record, variables = read_checkpoint(source)
    share = record.config["share"]
    return variables, record.config["model"], {"share": share} if share is not None else {}


def source_variables(source: str, model_name: str, model: Any) -> dict:
    """The variables of `source`, in `model`'s sharing and loop layout (head left as found)."""
    if not os.path.exists(source):
        raise UserError(f"init_from={source!r} does not exist")
    if source.endswith(TORCH_SUFFIXES):
        from sharesnet_jax.interop.torchvision import from_torchvision

        try:
            variables = from_torchvision(source, model_name, share="none")
        except ValueError as err:
            raise UserError(f"init_from={source!r}: {err}") from None
        name, overrides = model_name, {"share": "none"}
    else:
        variables, name, overrides = _from_checkpoint(source)
    source_share = overrides.pop("share", None) or create_model(name, num_classes=1).share
    if source_share == model.share:
        return variables
    if source_share != "none":
        raise UserError(f"init_from={source!r} holds a model with share={source_share!r}; only "
                        f"unshared weights can be made share={model.share!r}")
    try:
        shared, report = shareify(variables, name, share=model.share, **overrides)
    except ValueError as err:
        raise UserError(f"init_from={source!r}: {err}") from None
    logging.info("init_from: shared kernels start as the mean of the kernels they replace:\n%s",
                 report)
    return shared


def initial_variables(source: str, model_name: str, model: Any, fresh: dict) -> dict:
    """`fresh` (the new model's initial variables) overwritten by those of `source`.

    Every path must match in shape, except a head of another size, which stays fresh.
    """
    scanned = getattr(model, "stage_impl", "loop") == "scan"
    loaded = flax.traverse_util.flatten_dict(source_variables(source, model_name, model), sep="/")
    fresh = jax.device_get(to_loop_layout(fresh) if scanned else fresh)
    merged, kept_fresh = {}, []
    for path, leaf in flax.traverse_util.flatten_dict(fresh, sep="/").items():
        found = loaded.get(path)
        if found is None:
            raise UserError(f"init_from={source!r} has no {path}: it holds another architecture")
        if np.shape(found) == np.shape(leaf):
            merged[path] = np.asarray(found, dtype=np.asarray(leaf).dtype)
        elif path.split("/")[1] == "head":
            merged[path] = leaf
            kept_fresh.append(path)
        else:
            raise UserError(f"init_from={source!r} holds {path} with shape {np.shape(found)}, "
                            f"this model needs {np.shape(leaf)}")
    if kept_fresh:
        logging.info("init_from: %s differ in size (another number of classes): freshly "
                     "initialised", ", ".join(kept_fresh))
    variables = flax.traverse_util.unflatten_dict(merged, sep="/")
    return to_scan_layout(variables) if scanned else variables
