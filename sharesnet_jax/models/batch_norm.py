"""BatchNorm whose training statistics come from groups of examples, as data-parallel Torch code
computes them per GPU (fb.resnet.torch's DataParallelTable: each replica normalises its own slice
of the batch).

Under `jax.jit` over a data mesh a plain `nn.BatchNorm` takes its statistics over the whole global
batch; on a pod slice that is thousands of examples, which trains differently from the per-GPU
statistics of the paper's runs. `GroupBatchNorm` splits the batch into consecutive groups of
`group_size` examples (a group stays on one device when the group size divides the per-device
batch) and normalises each group by its own mean and variance. Its variables are named and
shaped as `nn.BatchNorm`'s, so checkpoints interchange; the running averages follow the mean of
the groups' statistics.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupBatchNorm(nn.Module):
    group_size: int
    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros
    # Inside `shard_map`: the running averages follow the groups of every device on this axis
    # (each device normalises only its own groups, which need no communication).
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
        values = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
            normalized = (values - mean) * jax.lax.rsqrt(var + self.epsilon)
        else:
            if x.shape[0] % self.group_size:
                raise ValueError(f"bn_group_size={self.group_size} does not divide the batch of "
                                 f"{x.shape[0]} examples")
            groups = values.reshape(x.shape[0] // self.group_size, self.group_size, *x.shape[1:])
            axes = tuple(range(1, groups.ndim - 1))
            mean = jnp.mean(groups, axes, keepdims=True)
            # E[x^2] - E[x]^2, as nn.BatchNorm computes it by default.
            var = jnp.maximum(jnp.mean(jnp.square(groups), axes, keepdims=True) - jnp.square(mean),
                              0.0)
            normalized = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                group_means = jnp.stack([jnp.mean(s.reshape(-1, features), axis=0)
                                         for s in (mean, var)])
                if self.axis_name is not None:
                    group_means = jax.lax.pmean(group_means, self.axis_name)
                for running, batch in zip((running_mean, running_var), group_means):
                    running.value = self.momentum * running.value + (1 - self.momentum) * batch
        y = normalized * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)
