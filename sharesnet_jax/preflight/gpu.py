"""NVIDIA GPUs: published figures, and GPU hosts as XLA compiles for them without a GPU.

XLA's CUDA compiler takes a target description (`GpuTargetConfigProto`, vendored in
`gpu_specs/`) in place of a device, so the trainer's own steps compile for, say, 8 H100s on a
CPU machine. It needs the CUDA plugin and its CUDA/cuDNN libraries (the `gpu` extra) and JAX kept
on the CPU (`JAX_PLATFORMS=cpu`: otherwise the plugin looks for a GPU and fails at cuInit).

Unlike TPU, XLA does not refuse a GPU program that exceeds the memory: the planner compares the
memory analysis with what JAX lets a program use, by default 75% of the GPU
(`XLA_PYTHON_CLIENT_MEM_FRACTION`). cuDNN picks convolution algorithms, and their workspace,
only on a device: the memory figures are a lower bound by that workspace.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re

from sharesnet_jax.preflight.accelerators import Accelerator, Cluster, PlanError

SPECS = os.path.join(os.path.dirname(__file__), "gpu_specs")
GPUS_PER_HOST = (1, 2, 4, 8)
DEFAULT_MEMORY_FRACTION = 0.75  # JAX's default preallocation, XLA_PYTHON_CLIENT_MEM_FRACTION


@dataclasses.dataclass(frozen=True)
class GpuModel:
    spec: str  # file in gpu_specs/
    memory_bytes: int  # the spec's device_memory_size (what the driver reports)
    peak_bf16_flops: float  # dense (without structured sparsity)
    memory_bandwidth: float
    nvlink_bandwidth: float  # both directions, per GPU
    network_bandwidth: float  # one direction, per GPU, between hosts


# Published figures. Sources (NVIDIA datasheets, read 2026-12):
#   A100: nvidia.com/en-us/data-center/a100 (datasheet): BF16 Tensor Core 312 TFLOP/s dense
#         (624 with sparsity); 40GB HBM2 1,555 GB/s, 80GB HBM2e 2,039 GB/s; NVLink 600 GB/s.
#   H100 SXM: nvidia.com/en-us/data-center/h100 (datasheet): BF16 1,979 TFLOP/s with sparsity,
#         989 dense; HBM3 3.35 TB/s; NVLink 900 GB/s.
#   H200 SXM: nvidia.com/en-us/data-center/h200 (datasheet): BF16 1,979 TFLOP/s with sparsity,
#         989 dense; 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s.
#   Between hosts: one NIC per GPU as in NVIDIA's DGX systems (DGX A100: 200 Gb/s HDR
#         InfiniBand = 25 GB/s; DGX H100/H200: 400 Gb/s NDR = 50 GB/s, each way). An ASSUMPTION
#         about the cluster, not a property of the GPU: clouds differ.
GPUS: dict[str, GpuModel] = {
    "a100-40": GpuModel("a100_sxm_40.txtpb", 42331013120, 312e12, 1555e9, 600e9, 25e9),
    "a100-80": GpuModel("a100_sxm_80.txtpb", 85100068864, 312e12, 2039e9, 600e9, 25e9),
    "h100": GpuModel("h100_sxm.txtpb", 84942979072, 989e12, 3350e9, 900e9, 50e9),
    "h200": GpuModel("h200.txtpb", 151397597184, 989e12, 4800e9, 900e9, 50e9),
}
TOPOLOGY_EXAMPLE = "h100:8"


def is_gpu_topology(topology: str) -> bool:
    return topology.partition(":")[0] in GPUS


def memory_fraction() -> float:
    """What JAX will let a program use of each GPU: XLA_PYTHON_CLIENT_MEM_FRACTION, else 0.75."""
    text = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")
    if text is None:
        return DEFAULT_MEMORY_FRACTION
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise PlanError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={text!r} must be a number in (0, 1]")
    return value


def accelerator(name: str) -> Accelerator:
    model = GPUS[name]
    fraction = memory_fraction()
    return Accelerator(
        name, "gpu", model.peak_bf16_flops, model.memory_bytes,
        int(fraction * model.memory_bytes), model.memory_bandwidth, model.nvlink_bandwidth,
        network_bandwidth=model.network_bandwidth,
        usable_note=f"{fraction:.0%} of the GPU, JAX's preallocation "
                    "(XLA_PYTHON_CLIENT_MEM_FRACTION)",
        note="GPU memory excludes cuDNN's convolution workspace (no algorithm is picked without "
             "a device): a lower bound; XLA reports no FLOPs for CUDA programs (ours are counted)")


def parse_topology(topology: str) -> tuple[str, int, int]:
    """'h100:8' -> ('h100', 1 host, 8 GPUs per host); 'h100:2x8' -> 2 hosts of 8."""
    name, _, shape = topology.partition(":")
    match = re.fullmatch(r"(?:(\d+)x)?(\d+)", shape)
    hosts, per_host = (int(match.group(1) or 1), int(match.group(2))) if match else (0, 0)
    if name not in GPUS or hosts < 1 or per_host not in GPUS_PER_HOST:
        raise PlanError(f"unknown GPU topology {topology!r}: give GPU:N or GPU:HOSTSxN with a GPU "
                        f"among {', '.join(GPUS)} and N GPUs per host in "
                        f"{', '.join(map(str, GPUS_PER_HOST))}, e.g. --topology={TOPOLOGY_EXAMPLE}")
    return name, hosts, per_host


def require_cuda_plugin() -> None:
    try:
        importlib.metadata.version("jax-cuda12-plugin")
    except importlib.metadata.PackageNotFoundError:
        raise PlanError('planning for GPU needs the CUDA plugin: pip install -e ".[gpu]"'
                        ) from None


def gpu_cluster(topology: str) -> Cluster:
    name, hosts, per_host = parse_topology(topology)
    require_cuda_plugin()
    from jax.experimental import topologies

    with open(os.path.join(SPECS, GPUS[name].spec)) as spec:
        target_config = spec.read()
    try:
        # partitions x hosts per partition x devices per host
        description = topologies.get_topology_desc(
            platform="cuda", target_config=target_config, topology=f"1x{hosts}x{per_host}")
    except Exception as err:  # noqa: BLE001 - the plugin reports problems as JaxRuntimeError
        reason = " ".join(str(err).split())[:300]
        hint = (" (set JAX_PLATFORMS=cpu: the plugin must not look for a GPU)"
                if "cuInit" in reason or "not implemented" in reason else "")
        raise PlanError(f"the CUDA plugin cannot describe {topology!r}: {reason}{hint}") from None
    return Cluster(topology, accelerator(name), tuple(description.devices), hosts)
