"""--topology text -> the cluster to compile for: a TPU slice (`v5e:2x4`) or GPU hosts (`h100:8`,
`h100:2x8`)."""

from __future__ import annotations

from sharesnet_jax.preflight import gpu, tpu
from sharesnet_jax.preflight.accelerators import Cluster, PlanError


def cluster_for(topology: str) -> Cluster:
    if tpu.is_tpu_topology(topology):
        return tpu.tpu_slice(topology)
    if gpu.is_gpu_topology(topology):
        return gpu.gpu_cluster(topology)
    raise PlanError(
        f"unknown topology {topology!r}: give a TPU slice GENERATION:SHAPE with a generation "
        f"among {', '.join(tpu.CHIPS)} (e.g. --topology={tpu.TOPOLOGY_EXAMPLE}) or GPUs GPU:N or "
        f"GPU:HOSTSxN with a GPU among {', '.join(gpu.GPUS)} (e.g. "
        f"--topology={gpu.TOPOLOGY_EXAMPLE})")
