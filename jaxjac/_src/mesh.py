"""The one-axis device mesh of data parallelism and its two shardings.

The batch is split over the mesh axis ``"data"`` (:func:`data_sharding`);
parameters, optimizer state, keys and metrics are replicated
(:func:`replicated_sharding`). Devices are ordered by process, so each
host's devices hold one contiguous block of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxjac._src import checks

DATA_AXIS = "data"


def make_mesh(
  num_devices: int | None = None,
  *,
  devices: Sequence[jax.Device] | None = None,
  axis_name: str = DATA_AXIS,
) -> Mesh:
  """A one-axis device mesh for data parallelism.

  Devices are ordered by process and then id, so each host's devices hold a
  contiguous block of the global batch. The axis is ``AxisType.Auto``: the
  sharding of intermediates is left to XLA's propagation, so functions that
  know nothing of meshes run on it unchanged.

  Args:
    num_devices: how many devices to use, the first ones in that order;
      ``None`` for all. In a multi-host run it must be all of them.
    devices: the devices to choose from, ``jax.devices()`` by default.
    axis_name: the name of the batch axis.

  Returns:
    A :class:`jax.sharding.Mesh` of shape ``(num_devices,)``.

  Raises:
    ValueError: ``num_devices`` larger than the number of devices, or fewer
      than all of them in a multi-host run.
  """
  pool = list(jax.devices() if devices is None else devices)
  if not pool:
    raise ValueError("`devices` must hold at least one device, got an empty sequence.")
  pool.sort(key=lambda d: (d.process_index, d.id))
  if num_devices is None:
    num_devices = len(pool)
  num_devices = checks.check_positive_int(num_devices, "num_devices")
  if num_devices > len(pool):
    raise ValueError(
      f"`num_devices` must be <= the {len(pool)} available devices "
      f"({pool[0].platform}), got {num_devices}. On CPU, more host devices come "
      "from XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts."
    )
  chosen = pool[:num_devices]
  if jax.process_count() > 1 and {d.process_index for d in chosen} != set(
    range(jax.process_count())
  ):
    raise ValueError(
      f"`num_devices`={num_devices} leaves some of the {jax.process_count()} processes "
      "without a device; in a multi-host run use all devices (num_devices=None)."
    )
  return Mesh(np.array(chosen), (axis_name,), axis_types=(AxisType.Auto,))


def mesh_for_config(num_devices: Any, *, batch_size: int) -> Mesh | None:
  """The data-parallel mesh of a training configuration's ``num_devices``.

  ``1``: ``None`` (no mesh: the plain single-device jit); ``0``: all devices
  (of all hosts); ``n > 1``: the first ``n`` devices. With a mesh, the
  global ``batch_size`` must split evenly over it.

  Raises:
    ValueError: a negative ``num_devices``, more than there are, or a
      ``batch_size`` that is not a multiple of the mesh size.
  """
  if isinstance(num_devices, bool) or not isinstance(num_devices, (int, np.integer)):
    raise TypeError(f"`num_devices` must be an int >= 0 (0: all devices), got {num_devices!r}.")
  if num_devices < 0:
    raise ValueError(f"`num_devices` must be >= 0 (0: all devices), got {num_devices}.")
  if num_devices == 1:
    return None
  mesh = make_mesh(None if num_devices == 0 else int(num_devices))
  check_batch_size(batch_size, mesh, name="batch_size")
  return mesh


def _data_axis(mesh: Mesh) -> str:
  if not isinstance(mesh, Mesh):
    raise TypeError(
      f"`mesh` must be a jax.sharding.Mesh (see make_mesh), got {type(mesh).__name__}."
    )
  if DATA_AXIS in mesh.axis_names:
    return DATA_AXIS
  if len(mesh.axis_names) == 1:
    return mesh.axis_names[0]
  raise ValueError(
    f"`mesh` must have an axis named {DATA_AXIS!r} (or a single axis), got axes {mesh.axis_names}."
  )


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: leading axis split over the data axis, rest replicated."""
  return NamedSharding(mesh, PartitionSpec(_data_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters, optimizer state, keys and metrics: a full copy per device."""
  _data_axis(mesh)
  return NamedSharding(mesh, PartitionSpec())


def num_data_shards(mesh: Mesh) -> int:
  """Number of devices along the data axis: the batch is split into this many parts."""
  return int(mesh.shape[_data_axis(mesh)])


def check_batch_size(batch_size: int, mesh: Mesh, *, name: str = "batch_size") -> int:
  """Returns ``batch_size`` if it splits evenly over the mesh's data axis.

  Raises:
    ValueError: naming ``name``, when it is not a multiple of the number of
      devices on the data axis.
  """
  batch_size = checks.check_positive_int(batch_size, name)
  shards = num_data_shards(mesh)
  if batch_size % shards:
    lower = max(shards, batch_size - batch_size % shards)
    what = f"`{name}`"
    if not name.endswith("size"):
      what = f"the batch size of `{name}` (its leading dimension)"
    raise ValueError(
      f"{what} must be a multiple of the {shards} devices on the mesh axis "
      f"{_data_axis(mesh)!r}, got {batch_size}; use e.g. {lower} or "
      f"{batch_size - batch_size % shards + shards}."
    )
  return batch_size
