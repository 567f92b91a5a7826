"""Data parallelism over devices and hosts with `jax.sharding`.

The batch is split over one mesh axis, ``"data"``, and everything else
(parameters, optimizer state, PRNG keys, metrics) is replicated. The
functions of the library are not rewritten for this: they are jitted from the
outside with :class:`jax.sharding.NamedSharding` in- and out-shardings, and
XLA's sharding propagation (GSPMD) partitions the computation and inserts the
all-reduces (e.g. of the gradient's batch mean).

Per-example quantities therefore do not depend on how many devices there are:

* row ``b`` of every batched forward, VJP and JVP is the same computation on
  one device or many, and batch means become one all-reduce;
* random draws of a sharded shape, like the per-example projections ``v_b`` of
  :func:`jaxjac.jacobian_penalty` or PGD's random start, are identical for
  every sharding because JAX's ``threefry`` generator is partitionable
  (``jax_threefry_partitionable``, on by default since JAX 0.5): the draw for
  example ``b`` depends on the key and on ``b`` only.

Multi-host runs use the same code: every host runs the same program on its
own share of the data (:func:`host_shard`), :func:`shard_batch` assembles the
host-local batches into one global array, and the jitted step sees the
global batch. :func:`initialize_distributed` starts
``jax.distributed`` from the environment.

Example::

  mesh = jaxjac.sharding.make_mesh()            # all devices on axis "data"
  state = jaxjac.sharding.replicate(state, mesh)
  step = jaxjac.sharding.shard_train_step(train_step, mesh)
  for x, y in batches:                           # NumPy, host-local
    state, metrics = step(state, (x, y), jax.random.fold_in(key, i))
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxjac._src import checks

DATA_AXIS = "data"

# Output-sharding names accepted by `shard_fn`.
_OUT_KINDS = ("replicated", "batch")


# ---------------------------------------------------------------------------
# Processes and meshes.
# ---------------------------------------------------------------------------


def _env_int(env: Mapping[str, str], name: str) -> int:
  value = env[name]
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {value!r}.") from None


def initialize_distributed(*, environ: Mapping[str, str] | None = None) -> bool:
  """Starts ``jax.distributed`` when the environment describes a multi-host run.

  Must run before any other JAX call in the process. Recognized, in order:

  * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``: explicit;
    ``JAX_LOCAL_DEVICE_IDS`` (comma-separated) optionally restricts the
    devices of this process. With only the address set, the process count
    and id come from the cluster (SLURM, Open MPI).
  * SLURM with ``SLURM_NTASKS > 1`` (``srun``), or Open MPI with
    ``OMPI_COMM_WORLD_SIZE > 1`` (``mpirun``): JAX's own auto-detection.

  Otherwise it does nothing: a single-process run.

  Args:
    environ: the environment to read, ``os.environ`` by default.

  Returns:
    True if ``jax.distributed`` is initialized (now or before), else False.

  Raises:
    ValueError: a partial or malformed explicit configuration, e.g.
      ``JAX_NUM_PROCESSES`` without ``JAX_COORDINATOR_ADDRESS``.
  """
  env = os.environ if environ is None else environ
  if jax.distributed.is_initialized():
    return True
  address = env.get("JAX_COORDINATOR_ADDRESS")
  has_count, has_id = "JAX_NUM_PROCESSES" in env, "JAX_PROCESS_ID" in env
  if address:
    if has_count != has_id:
      raise ValueError(
          "set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, to take them from "
          f"SLURM / Open MPI); got only {'JAX_NUM_PROCESSES' if has_count else 'JAX_PROCESS_ID'}."
      )
    kwargs: dict[str, Any] = {"coordinator_address": address}
    if has_count:
      num_processes = _env_int(env, "JAX_NUM_PROCESSES")
      process_id = _env_int(env, "JAX_PROCESS_ID")
      if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            "JAX_PROCESS_ID must be in [0, JAX_NUM_PROCESSES), got "
            f"JAX_PROCESS_ID={process_id}, JAX_NUM_PROCESSES={num_processes}."
        )
      kwargs.update(num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**kwargs)
    return True
  if has_count or has_id:
    raise ValueError(
        "JAX_NUM_PROCESSES / JAX_PROCESS_ID are set but JAX_COORDINATOR_ADDRESS "
        "(host:port of process 0) is not; set it on every process."
    )
  slurm = "SLURM_JOB_ID" in env and "SLURM_STEP_NODELIST" in env
  if slurm and int(env.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
    return True
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    jax.distributed.initialize()
    return True
  return False


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
      f"`mesh` must have an axis named {DATA_AXIS!r} (or a single axis), "
      f"got axes {mesh.axis_names}."
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


# ---------------------------------------------------------------------------
# Host-side data.
# ---------------------------------------------------------------------------


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
  dims = _leading_dims(batch)
  sizes = {size for _, size in dims}
  if len(sizes) > 1:
    raise ValueError(
        "`batch` leaves must share one leading (batch) dimension, got "
        + ", ".join(f"{name}: {size}" for name, size in dims)
        + "."
    )
  size = sizes.pop()
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


# ---------------------------------------------------------------------------
# Jitting functions over the mesh.
# ---------------------------------------------------------------------------


def _to_sharding(kind: Any, mesh: Mesh, name: str) -> Any:
  if isinstance(kind, str):
    checks.check_choice(kind, name, _OUT_KINDS)
    return data_sharding(mesh) if kind == "batch" else replicated_sharding(mesh)
  return jax.tree.map(lambda k: _to_sharding(k, mesh, name), kind)


def shard_fn(
    fn: Callable[..., Any],
    mesh: Mesh,
    *,
    batch_argnums: Sequence[int] = (),
    out_shardings: Any = "replicated",
    donate_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
  """Jits ``fn`` over the mesh: batch arguments split, all others replicated.

  Positional arguments listed in ``batch_argnums`` (pytrees of arrays with a
  leading batch axis) are split over the data axis; the other positional
  arguments are replicated. Each call first places the arguments with
  :func:`shard_batch` and :func:`replicate` (no-ops for arrays already placed
  so, like the state returned by the previous step), so a data loader's
  host-local NumPy output can be passed directly, in single- and multi-host
  runs alike. Bind keyword and static configuration with
  ``functools.partial`` first.

  Args:
    fn: a pure function of positional array pytrees.
    mesh: the mesh from :func:`make_mesh`.
    batch_argnums: indices of the arguments to split along their first axis.
    out_shardings: ``"replicated"``, ``"batch"``, or a pytree prefix of the
      output made of those names, e.g. ``("replicated", "batch")``.
    donate_argnums: arguments whose buffers the output may reuse.

  Returns:
    A function with ``fn``'s signature, compiled once per input shape, with
    a ``lower(*args)`` method for ahead-of-time compilation.

  Raises:
    ValueError: (at call time) a batch argument whose leading dimension is
      not a multiple of the number of devices on the data axis.
  """
  if not callable(fn):
    raise TypeError(f"`fn` must be callable, got {fn!r}.")
  batch_argnums = tuple(batch_argnums)
  for i in batch_argnums:
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
      raise ValueError(f"`batch_argnums` must hold non-negative ints, got {batch_argnums}.")
  out = _to_sharding(out_shardings, mesh, "out_shardings")
  data, rep = data_sharding(mesh), replicated_sharding(mesh)
  cache: dict[int, Callable[..., Any]] = {}

  def jitted_for(nargs: int) -> Callable[..., Any]:
    if nargs not in cache:
      if batch_argnums and max(batch_argnums) >= nargs:
        raise ValueError(
            f"`batch_argnums` {batch_argnums} refers to argument {max(batch_argnums)}, "
            f"but the function was called with {nargs} positional arguments."
        )
      in_shardings = tuple(data if i in batch_argnums else rep for i in range(nargs))
      cache[nargs] = jax.jit(
          fn,
          in_shardings=in_shardings,
          out_shardings=out,
          donate_argnums=tuple(donate_argnums),
      )
    return cache[nargs]

  def place(args):
    return tuple(
        shard_batch(arg, mesh) if i in batch_argnums else replicate(arg, mesh)
        for i, arg in enumerate(args)
    )

  @functools.wraps(fn)
  def wrapped(*args):
    return jitted_for(len(args))(*place(args))

  # Ahead-of-time compilation, as for a jitted function: `wrapped.lower(*args).compile()`.
  wrapped.lower = lambda *args: jitted_for(len(args)).lower(*place(args))
  return wrapped


def shard_train_step(
    train_step: Callable[..., Any],
    mesh: Mesh,
    *,
    donate_state: bool = True,
) -> Callable[..., Any]:
  """Data-parallel ``train_step(state, batch, key) -> (state, metrics)``.

  The state and the key are replicated, the batch is split over the data
  axis, and the new state and the metrics come back replicated. The
  gradient's batch mean becomes an all-reduce across devices, so the step
  equals the single-device step on the same global batch (up to the order
  of floating-point sums). Per-example randomness inside the step (dropout
  masks, Jacobian projections, attack starts) is drawn for the global batch
  and does not depend on the device count.

  Args:
    train_step: e.g. from ``jaxjac.training.make_train_step(config)``; it may
      already be jitted.
    mesh: the mesh from :func:`make_mesh`.
    donate_state: reuse the old state's buffers for the new one.

  Returns:
    The jitted step; the state may come from a single device (it is
    replicated on the first call) and batches may be host-local NumPy arrays.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> mesh = jaxjac.sharding.make_mesh(1)
    >>> step = lambda w, batch, key: (w - 0.1 * jnp.mean(batch[0]), {"m": jnp.mean(batch[0])})
    >>> step = jaxjac.sharding.shard_train_step(step, mesh, donate_state=False)
    >>> w, metrics = step(jnp.zeros(()), (jnp.ones((4, 2)),), jax.random.key(0))
    >>> float(w)
    -0.1
  """
  return shard_fn(
      train_step,
      mesh,
      batch_argnums=(1,),
      out_shardings="replicated",
      donate_argnums=(0,) if donate_state else (),
  )


def shard_attack(
    attack: Callable[..., jax.Array],
    apply_fn: Callable[..., jax.Array],
    mesh: Mesh,
    **attack_kwargs: Any,
) -> Callable[..., jax.Array]:
  """Data-parallel attack: ``run(params, x, y, key=None) -> x_adv``.

  Wraps ``attack(apply_fn, params, x, y, key=key, **attack_kwargs)`` (e.g.
  ``jaxjac.attacks.pgd`` with ``eps``, ``norm``, ``steps``, ...) with ``x``,
  ``y`` and ``x_adv`` split over the data axis and ``params``, ``key``
  replicated. The attack's random start is drawn for the global batch, so the
  adversarial examples equal the single-device ones.

  Args:
    attack: the attack function, called with ``apply_fn`` first.
    apply_fn: the model, ``apply_fn(params, x) -> logits``.
    mesh: the mesh from :func:`make_mesh`.
    **attack_kwargs: the attack's keyword configuration (not ``key``).

  Returns:
    ``run(params, x, y, key=None)``; ``key`` is passed on only when given.
  """
  if "key" in attack_kwargs:
    raise ValueError("`key` must be passed to the returned function per call, not to shard_attack.")
  with_key = shard_fn(
      lambda params, x, y, key: attack(apply_fn, params, x, y, key=key, **attack_kwargs),
      mesh,
      batch_argnums=(1, 2),
      out_shardings="batch",
  )
  without_key = shard_fn(
      lambda params, x, y: attack(apply_fn, params, x, y, **attack_kwargs),
      mesh,
      batch_argnums=(1, 2),
      out_shardings="batch",
  )

  def run(params: Any, x: Any, y: Any, key: jax.Array | None = None) -> jax.Array:
    if key is None:
      return without_key(params, x, y)
    return with_key(params, x, y, key)

  return run
