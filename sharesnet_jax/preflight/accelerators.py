"""What the planner compiles for: an accelerator's published figures and a cluster of them (a
TPU slice or GPU hosts), plus the planner's one-line errors. `tpu` and `gpu` build clusters;
`target` parses the --topology text into one."""

from __future__ import annotations

import dataclasses

from sharesnet_jax.errors import UserError


class PlanError(UserError):
    """A one-line problem the CLI prints as is; `exit_code` is what the process returns."""

    exit_code = 2


class DoesNotFit(PlanError):
    """The train step needs more memory per device than the device has. `record` is the same
    verdict as data (for --json)."""

    exit_code = 1

    def __init__(self, message: str, record: dict | None = None):
        super().__init__(message)
        self.record = record or {}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """Published figures of one device kind, and the memory a program may use on it."""

    name: str  # as --topology names it: 'v5e', 'h100'
    kind: str  # 'tpu' or 'gpu'
    peak_bf16_flops: float  # FLOP/s, dense
    memory_bytes: int  # published
    usable_bytes: int  # what a program may allocate (see `usable_note`)
    memory_bandwidth: float  # bytes/s
    link_bandwidth: float  # bytes/s, both directions, one device's links to its peers (ICI, NVLink)
    # bytes/s, one direction, per device between hosts (GPU NICs); None: the links span hosts
    network_bandwidth: float | None = None
    usable_note: str = ""
    note: str = ""

    @property
    def unit(self) -> str:
        return "chip" if self.kind == "tpu" else "GPU"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The devices a plan compiles for: one per chip or GPU, across `hosts` hosts."""

    name: str  # the --topology text
    accelerator: Accelerator
    devices: tuple
    hosts: int

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def all_reduce_bandwidth(self) -> float:
        """Bytes/s one device sends in a ring all-reduce: half its bidirectional links, or its
        network link when the ring crosses hosts over a network (the slowest hop bounds a ring)."""
        within = self.accelerator.link_bandwidth / 2
        if self.hosts > 1 and self.accelerator.network_bandwidth:
            return min(within, self.accelerator.network_bandwidth)
        return within
