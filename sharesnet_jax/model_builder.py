"""The model a config describes: the registry name plus the config fields that override module
fields. Shared by the trainer, validation and prediction, and free of TensorFlow."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sharesnet_jax.errors import UserError
from sharesnet_jax.models import create_model

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MODEL_FIELDS = ("share", "dropout_rate", "stage_impl", "remat")


def build_model(config: Any, num_classes: int) -> nn.Module:
    """Unset (None) fields keep the registry's values; `config` is a ConfigDict or a dict."""
    overrides = {"dtype": DTYPES[config.get("dtype", "float32")]}
    for field in MODEL_FIELDS:
        if config.get(field, None) is not None:
            overrides[field] = config[field]
    try:
        return create_model(config["model"], num_classes=num_classes, **overrides)
    except ValueError as err:
        raise UserError(str(err)) from None
