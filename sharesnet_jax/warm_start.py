"""Starting a run from existing weights (`config.init_from`): a torchvision `.pth` file or a
checkpoint of this trainer, unshared weights made shared with `convert.shareify` when the new
model shares kernels. This is how a ShaResNet is fine-tuned from a pretrained ResNet, as the paper
did on ImageNet.

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
import orbax.checkpoint as ocp

from sharesnet_jax import convert
from sharesnet_jax.errors import UserError
from sharesnet_jax.models import create_model, to_loop_layout, to_scan_layout

TORCH_SUFFIXES = (".pth", ".pt")


def _step_directory(source: str) -> str:
    """A workdir, its checkpoints/ folder or one step folder -> the step folder to read."""
    for candidate in (os.path.join(source, "checkpoints"), source):
        steps = [int(n) for n in os.listdir(candidate) if n.isdigit()] if os.path.isdir(
            candidate) else []
        if steps:
            return os.path.join(candidate, str(max(steps)))
    if os.path.isdir(os.path.join(source, "state")):
        return source
    raise UserError(f"init_from={source!r} is neither a .pth file nor a workdir, checkpoints "
                    "directory or step directory of this trainer")


def read_checkpoint(source: str) -> tuple[dict, dict]:
    """(record, variables) of the newest checkpoint under `source`, in loop layout, read without
    a target: only params and batch_stats are needed, so optimizer types do not matter."""
    step_dir = _step_directory(source)
    try:
        record = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
            os.path.join(step_dir, "record"))
        state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
    except Exception as err:  # noqa: BLE001 - any unreadable source is the user's to fix
        raise UserError(f"cannot read the checkpoint {step_dir} "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    if record["config"].get("stage_impl") == "scan":
        variables = to_loop_layout(variables)
    return record, variables


def _from_checkpoint(source: str) -> tuple[dict, str, dict]:
    """Variables (loop layout), model name and sharing recorded with the checkpoint."""
    record, variables = read_checkpoint(source)
    config = record["config"]
    overrides = {"share": config["share"]} if config.get("share") is not None else {}
    return variables, config["model"], overrides


def source_variables(source: str, model_name: str, model: Any) -> dict:
    """The variables of `source`, in `model`'s sharing and loop layout (head left as found)."""
    if not os.path.exists(source):
        raise UserError(f"init_from={source!r} does not exist")
    if source.endswith(TORCH_SUFFIXES):
        try:
            variables = convert.from_torchvision(source, model_name, share="none")
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
        shared, report = convert.shareify(variables, name, share=model.share, **overrides)
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
