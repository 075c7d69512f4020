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
            normalized, group_mean, group_var = self._normalize_by_group(values)
            if not self.is_initializing():
                for running, batch in ((running_mean, group_mean), (running_var, group_var)):
                    running.value = self.momentum * running.value + (1 - self.momentum) * batch
        y = normalized * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)

    def _normalize_by_group(self, values: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(normalised values, mean over groups of the groups' means, ... of their variances)."""
        local, features = values.shape[0], values.shape[-1]
        if self.axis_name is not None and self.group_size > local:
            return self._normalize_across_devices(values)
        if local % self.group_size:
            raise ValueError(f"bn_group_size={self.group_size} does not divide the batch of "
                             f"{local} examples")
        groups = values.reshape(local // self.group_size, self.group_size, *values.shape[1:])
        axes = tuple(range(1, groups.ndim - 1))
        mean = jnp.mean(groups, axes, keepdims=True)
        # The mean squared deviation, not E[x^2] - E[x]^2 (nn.BatchNorm's default): a group of a
        # few examples cancels badly in the latter, and jax 0.12's CPU compiler turned that into
        # differences of 1e-5 after two steps between one device and eight (here: 2e-7).
        var = jnp.mean(jnp.square(groups - mean), axes, keepdims=True)
        normalized = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(values.shape)
        group_means = jnp.stack([jnp.mean(s.reshape(-1, features), axis=0) for s in (mean, var)])
        if self.axis_name is not None:
            group_means = jax.lax.pmean(group_means, self.axis_name)
        return normalized, group_means[0], group_means[1]

    def _normalize_across_devices(self, values: jax.Array):
        """A group spans `group_size / local batch` consecutive devices of the axis (a per-GPU
        group of 64 on chips holding 32 each): its mean and mean square are averaged over those
        devices only (`axis_index_groups`), and the running averages follow every group."""
        local = values.shape[0]
        if self.group_size % local:
            raise ValueError(f"bn_group_size={self.group_size} is neither a divisor nor a "
                             f"multiple of the {local} examples on each device")
        span, devices = self.group_size // local, jax.lax.axis_size(self.axis_name)
        if devices % span:
            raise ValueError(f"bn_group_size={self.group_size} spans {span} devices, which do "
                             f"not divide the {devices} devices")
        groups = [list(range(start, start + span)) for start in range(0, devices, span)]
        axes = tuple(range(values.ndim - 1))
        moments = jnp.stack([jnp.mean(values, axes), jnp.mean(jnp.square(values), axes)])
        mean, mean_square = jax.lax.pmean(moments, self.axis_name, axis_index_groups=groups)
        var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
        normalized = (values - mean) * jax.lax.rsqrt(var + self.epsilon)
        group_mean, group_var = jax.lax.pmean(jnp.stack([mean, var]), self.axis_name)
        return normalized, group_mean, group_var
