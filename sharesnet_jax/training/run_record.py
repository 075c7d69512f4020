"""The record stored beside each checkpoint: what its weights need to be used again (the run's
config, classes, input shape, normalisation and evaluation style) and the devices that wrote it.

One type for the trainer that writes it and for the resume, warm starts, prediction and export
that read it. The stored form is the JSON object of `to_json` (its keys are those of every
version so far); `from_json` is the one place that migrates the records of older versions and
refuses malformed ones in one line, instead of a KeyError wherever a field is first read.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

from sharesnet_jax.data.info import DatasetInfo
from sharesnet_jax.errors import UserError
from sharesnet_jax.training.config import base_config


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_of(check, length: int | None = None):
    return lambda value: isinstance(value, list) and all(map(check, value)) and (
        length is None or len(value) == length)


# Stored key -> (the test of its JSON value, what the test accepts), in the order written.
_REQUIRED = {
    "config": (lambda value: isinstance(value, dict), "an object of config fields"),
    "num_classes": (lambda value: _is_int(value) and value > 0, "a positive integer"),
    "augment": (lambda value: isinstance(value, str), "a string"),
    "image_shape": (_list_of(lambda v: _is_int(v) and v > 0, 3), "3 positive integers (H, W, C)"),
    "mean": (_list_of(_is_number), "a list of numbers"),
    "std": (_list_of(_is_number), "a list of numbers"),
    "class_names": (_list_of(lambda v: isinstance(v, str)), "a list of strings"),
}
# Keys added since the first version: a record without them gives None.
_ADDED_LATER = {
    "num_devices": (lambda value: value is None or _is_int(value), "an integer"),
    "num_processes": (lambda value: value is None or _is_int(value), "an integer"),
}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    config: Mapping[str, Any]  # the flat config (read-only), the schema's defaults filled in
    num_classes: int
    augment: str  # the training augmentation the run resolved; it sets the evaluation crop
    image_shape: tuple[int, int, int]  # (H, W, C) the model takes
    mean: tuple[float, ...]  # per channel, 0..255 units
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    num_devices: int | None  # None: written before devices were recorded
    num_processes: int | None
    checkpoint: str | None = None  # the step folder it was read from (not stored)

    @classmethod
    def of_run(cls, config: Any, info: DatasetInfo, num_devices: int,
               num_processes: int) -> "RunRecord":
        return cls(config=types.MappingProxyType(config.to_dict()), num_classes=info.num_classes,
                   augment=info.augment, image_shape=tuple(info.image_shape),
                   mean=tuple(info.mean), std=tuple(info.std),
                   class_names=tuple(info.class_names), num_devices=num_devices,
                   num_processes=num_processes)

    def to_json(self) -> dict[str, Any]:
        """The stored form: a JSON object with the keys every version has written."""
        return {"config": dict(self.config), "num_classes": self.num_classes,
                "augment": self.augment, "image_shape": list(self.image_shape),
                "mean": list(self.mean), "std": list(self.std),
                "class_names": list(self.class_names), "num_devices": self.num_devices,
                "num_processes": self.num_processes}

    @classmethod
    def from_json(cls, stored: Any, where: str, checkpoint: str | None = None) -> "RunRecord":
        """The record `where` (a file) holds. Records of older versions lack the config fields
        and keys added since: those runs ran with the schema's defaults, and their devices are
        unknown (None). Anything else missing or of another type is a one-line UserError."""
        if not isinstance(stored, dict):
            raise UserError(f"{where} is not a run record: it holds {type(stored).__name__} "
                            "where a JSON object was written; restore the file or move the "
                            "checkpoint away")
        missing = [key for key in _REQUIRED if key not in stored]
        if missing:
            raise UserError(f"{where} is not a complete run record: it lacks "
                            f"{', '.join(missing)}; restore the file or move the checkpoint away")
        for key, (accepts, accepted) in {**_REQUIRED, **_ADDED_LATER}.items():
            value = stored.get(key)
            if not accepts(value):
                raise UserError(f"{where} holds {key}={_shortened(value)}, expected {accepted}; "
                                "restore the file or move the checkpoint away")
        config = {**base_config().to_dict(), **stored["config"]}
        return cls(config=types.MappingProxyType(config), num_classes=stored["num_classes"],
                   augment=stored["augment"], image_shape=tuple(stored["image_shape"]),
                   mean=tuple(stored["mean"]), std=tuple(stored["std"]),
                   class_names=tuple(stored["class_names"]),
                   num_devices=stored.get("num_devices"),
                   num_processes=stored.get("num_processes"), checkpoint=checkpoint)


def _shortened(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
