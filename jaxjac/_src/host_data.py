"""Host-side data in single- and multi-host runs: which rows each process loads,
and how process-local arrays become global ``jax.Array`` s on the mesh.

In a multi-host run every process runs the same program. A global batch of
``B`` rows is split over the mesh's devices in order, and the devices of
process ``p`` hold one contiguous block of it, rows :func:`host_batch_slice`.
A training loop either

* draws the same global batch on every process (the same seed and data
  order) and keeps its own rows, ``x[host_batch_slice(B, mesh)]``, which
  :func:`shard_batch` assembles into the global batch: the run equals a
  single-process run on the same devices; or
* gives each process its own part of the dataset (:func:`host_shard`) and
  draws host-local batches of :func:`host_batch_size` rows.

:func:`shard_global_batch` does the first in one call, :func:`replicate`
places parameters and keys, and :func:`unreplicate` / :func:`gather` bring
results back to NumPy.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxjac._src import checks
from jaxjac._src.mesh import check_batch_size, data_sharding, num_data_shards, replicated_sharding


def host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The per-host share of a global batch, ``global_batch_size / process_count``.

  Raises:
    ValueError: ``global_batch_size`` not a multiple of the device count (so
      also of the process count).
  """
  check_batch_size(global_batch_size, mesh, name="global_batch_size")
  return global_batch_size // jax.process_count()


def host_shard(
  num_examples: int,
  *,
  process_index: int | None = None,
  process_count: int | None = None,
) -> slice:
  """The contiguous slice of a dataset that this host loads.

  Every host gets ``num_examples // process_count`` examples (the last
  ``num_examples % process_count`` are dropped), so all hosts run the same
  number of steps, which collective programs require.

  Args:
    num_examples: size of the dataset every host sees.
    process_index: this host, ``jax.process_index()`` by default.
    process_count: number of hosts, ``jax.process_count()`` by default.

  Returns:
    A ``slice`` to index the dataset's arrays with.

  Raises:
    ValueError: fewer examples than hosts, or ``process_index`` out of range.
  """
  num_examples = checks.check_positive_int(num_examples, "num_examples")
  count = checks.check_positive_int(
    jax.process_count() if process_count is None else process_count, "process_count"
  )
  index = jax.process_index() if process_index is None else process_index
  if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
    raise ValueError(f"`process_index` must be an int in [0, {count}), got {index!r}.")
  per_host = num_examples // count
  if per_host == 0:
    raise ValueError(f"`num_examples` must be >= process_count = {count}, got {num_examples}.")
  return slice(int(index) * per_host, (int(index) + 1) * per_host)


def _leading_dims(tree: Any) -> list[tuple[str, int]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  if not leaves:
    raise ValueError("`batch` must hold at least one array, got an empty pytree.")
  dims = []
  for path, leaf in leaves:
    shape = np.shape(leaf)
    name = "batch" + jax.tree_util.keystr(path)
    if not shape:
      raise ValueError(f"`{name}` must have a leading batch dimension, got a scalar.")
    dims.append((name, shape[0]))
  return dims


def _common_leading_dim(batch: Any) -> int:
  dims = _leading_dims(batch)
  sizes = {size for _, size in dims}
  if len(sizes) > 1:
    raise ValueError(
      "`batch` leaves must share one leading (batch) dimension, got "
      + ", ".join(f"{name}: {size}" for name, size in dims)
      + "."
    )
  return sizes.pop()


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a batch on the mesh, split along its leading axis.

  ``batch`` is a pytree of arrays with a common leading (batch) dimension,
  this process's data: in a single-process run the whole batch, in a
  multi-host run this host's part, assembled with the other hosts' parts into
  one global array (``jax.make_array_from_process_local_data``).

  Args:
    batch: pytree of NumPy or JAX arrays ``(B_local, ...)``.
    mesh: the mesh from :func:`make_mesh`.

  Returns:
    The same pytree of global ``jax.Array`` s sharded over the data axis.

  Raises:
    ValueError: leaves with different leading dimensions, or a batch that is
      not a multiple of the devices on the data axis (of this host's devices
      in a multi-host run).
  """
  size = _common_leading_dim(batch)
  sharding = data_sharding(mesh)
  leaves = jax.tree.leaves(batch)
  is_global = all(isinstance(leaf, jax.Array) and not leaf.is_fully_addressable for leaf in leaves)
  if jax.process_count() == 1 or is_global:
    check_batch_size(size, mesh, name="batch")
    return jax.device_put(batch, sharding)  # A no-op for arrays already placed so.
  local = num_data_shards(mesh) // jax.process_count()
  if size % local:
    raise ValueError(
      f"the host-local batch size (leading dimension of `batch`) must be a multiple "
      f"of this host's {local} devices, got {size}."
    )
  return jax.make_array_from_process_local_data(sharding, jax.tree.map(np.asarray, batch))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies a pytree (params, a ``TrainState``, a key) to every device of the mesh.

  In a multi-host run every host must pass the same values (e.g. from the same
  initialization key).
  """
  sharding = replicated_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(leaf):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      return leaf
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(leaf))
      impl = jax.random.key_impl(leaf)
      return jax.random.wrap_key_data(
        jax.make_array_from_process_local_data(sharding, data, data.shape), impl=impl
      )
    data = np.asarray(leaf)
    return jax.make_array_from_process_local_data(sharding, data, data.shape)

  return jax.tree.map(one, tree)


def gather(tree: Any) -> Any:
  """Fetches a pytree of (possibly multi-host) global arrays as NumPy on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return multihost_utils.process_allgather(tree, tiled=True)


def host_batch_slice(
  global_batch_size: int, mesh: Mesh, *, process_index: int | None = None
) -> slice:
  """The rows of a global batch that the devices of one process hold.

  The mesh's data axis splits a batch of ``global_batch_size`` rows into
  equal consecutive blocks, one per device in mesh order; a process's
  devices are consecutive on a mesh from :func:`jaxjac.sharding.make_mesh`,
  so its rows are one contiguous slice. A loop that draws the same global
  batch ``x`` on every process passes ``x[host_batch_slice(len(x), mesh)]``
  to :func:`shard_batch` and gets the global batch ``x`` on the mesh.

  Args:
    global_batch_size: rows of the global batch, a multiple of the mesh size.
    mesh: the mesh.
    process_index: the process, ``jax.process_index()`` by default.

  Returns:
    A ``slice`` of the batch's leading axis (all of it in a single-process run).

  Raises:
    ValueError: a batch size that does not split over the mesh, a process
      without devices on the mesh, or one whose devices are not consecutive.

  Example:
    >>> import jaxjac
    >>> mesh = jaxjac.sharding.make_mesh(1)
    >>> jaxjac.sharding.host_batch_slice(8, mesh)
    slice(0, 8, None)
  """
  check_batch_size(global_batch_size, mesh, name="global_batch_size")
  index = jax.process_index() if process_index is None else process_index
  devices = list(np.asarray(mesh.devices).flat)
  mine = [i for i, d in enumerate(devices) if d.process_index == index]
  if not mine:
    raise ValueError(f"`process_index` {index} has no device on the mesh.")
  if mine != list(range(mine[0], mine[-1] + 1)):
    raise ValueError(
      f"the devices of process {index} are not consecutive on the mesh (positions {mine}); "
      "build the mesh with jaxjac.sharding.make_mesh, which orders devices by process."
    )
  per_device = global_batch_size // len(devices)
  return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def shard_global_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a global batch that every process holds in full, each sending only its rows.

  The multi-host counterpart of ``jax.device_put(batch, data_sharding(mesh))``:
  every process passes the same pytree of arrays (e.g. drawn with the same
  seed), keeps the rows of :func:`host_batch_slice` and assembles the global
  array with :func:`shard_batch`. The result equals the single-process batch,
  so a multi-host run matches a single-process run on as many devices.

  Args:
    batch: pytree of NumPy or JAX arrays ``(B, ...)``, the same on every process.
    mesh: the mesh.

  Returns:
    The pytree of global ``jax.Array`` s sharded over the data axis.

  Raises:
    ValueError: leaves with different leading dimensions, or ``B`` not a
      multiple of the devices on the data axis.
  """
  size = _common_leading_dim(batch)
  check_batch_size(size, mesh, name="batch")
  if jax.process_count() == 1:
    return jax.device_put(batch, data_sharding(mesh))
  rows = host_batch_slice(size, mesh)
  return shard_batch(jax.tree.map(lambda a: np.asarray(a)[rows], batch), mesh)


def unreplicate(tree: Any) -> Any:
  """This process's copy of a pytree of replicated arrays, on one local device.

  No communication: every process reads its own copy, so code that only
  evaluates (accuracy, held-out norms) can run locally on every host. Leaves
  that are not ``jax.Array`` s are returned as they are.

  Raises:
    ValueError: a leaf that is not fully replicated (use :func:`gather`).
  """

  def one(path, leaf):
    if not isinstance(leaf, jax.Array):
      return leaf
    if not leaf.is_fully_replicated:
      raise ValueError(
        f"`tree{jax.tree_util.keystr(path)}` is not replicated (sharding {leaf.sharding}); "
        "use jaxjac.sharding.gather for sharded arrays."
      )
    return leaf.addressable_data(0)

  return jax.tree_util.tree_map_with_path(one, tree)
