"""Model statistics computed from shapes alone (`jax.eval_shape`): no weights are allocated, so
even ResNet-152 is measured in about a second."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharesnet_jax.models.registry import family_of


def default_image_shape(model: nn.Module) -> tuple[int, int, int]:
    """The input the paper measured the model's family at (its registry entry's image size)."""
    size = family_of(model).image_size
    return (size, size, 3)


def abstract_variables(model: nn.Module, image_shape: tuple[int, int, int] | None = None) -> Any:
    image_shape = image_shape or default_image_shape(model)
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def count_params(params: Any) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def count_stage_conv3x3_kernels(params: Any) -> int:
    """Distinct 3x3 kernels inside the residual stages (the stem's 3x3 is not a stage conv)."""
    count = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", None) for k in path]
        if keys[-1] == "kernel" and str(keys[0]).startswith("stage") and leaf.shape[:2] == (3, 3):
            count += 1
    return count


def forward_macs(model: nn.Module, image_shape: tuple[int, int, int] | None = None) -> int:
    """Multiply-adds of one forward pass per image, over every conv and dense call.

    A shared conv counts once per use: sharing saves parameters, not compute.
    """
    image_shape = image_shape or default_image_shape(model)
    model = model.clone(stage_impl="loop")  # a scan body is traced once, whatever its length
    macs = 0

    def record(next_fun, args, kwargs, context):
        nonlocal macs
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
            in_features = args[0].shape[-1]
            kernel = module.kernel_size if isinstance(module, nn.Conv) else ()
            per_output = math.prod(kernel) * in_features
            if isinstance(module, nn.Conv):
                per_output //= module.feature_group_count
            macs += math.prod(out.shape[1:]) * per_output
        return out

    variables = abstract_variables(model, image_shape)
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    return macs
