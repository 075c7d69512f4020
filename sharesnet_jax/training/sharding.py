"""The data-parallel device mesh: state replicated, batches split along one 'data' axis that
spans every device of every process."""

from __future__ import annotations

import collections
import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_data_mesh(devices: list | None = None) -> Mesh:
    devices = devices or jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def devices_by_process(mesh: Mesh) -> dict[int, list[int]]:
    """{process index: ids of its devices, in mesh order}, for the log."""
    layout: dict[int, list[int]] = {}
    for device in mesh.devices.flat:
        layout.setdefault(device.process_index, []).append(device.id)
    return layout


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Each process contributes its own rows; together they form one global array per key."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def prefetch_to_mesh(batches: Iterable[dict[str, np.ndarray]], mesh: Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight to the devices so the host->device copy overlaps compute."""
    queue: collections.deque = collections.deque()
    batches = iter(batches)
    for batch in itertools.islice(batches, size):
        queue.append(global_batch(batch, mesh))
    while queue:
        yield queue.popleft()
        for batch in itertools.islice(batches, 1):
            queue.append(global_batch(batch, mesh))
