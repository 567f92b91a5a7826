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
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import jax
from jax.sharding import Mesh

from jaxjac._src import checks

# The names below are re-exported so that `jaxjac._src.sharding` keeps offering the whole
# data-parallel toolkit to the training loop; each lives in the module of its concept.
from jaxjac._src.distributed import initialize_distributed as initialize_distributed
from jaxjac._src.host_data import gather as gather
from jaxjac._src.host_data import host_batch_size as host_batch_size
from jaxjac._src.host_data import host_batch_slice as host_batch_slice
from jaxjac._src.host_data import host_shard as host_shard
from jaxjac._src.host_data import replicate as replicate
from jaxjac._src.host_data import shard_batch as shard_batch
from jaxjac._src.host_data import shard_global_batch as shard_global_batch
from jaxjac._src.host_data import unreplicate as unreplicate
from jaxjac._src.mesh import DATA_AXIS as DATA_AXIS
from jaxjac._src.mesh import check_batch_size as check_batch_size
from jaxjac._src.mesh import data_sharding as data_sharding
from jaxjac._src.mesh import make_mesh as make_mesh
from jaxjac._src.mesh import mesh_for_config as mesh_for_config
from jaxjac._src.mesh import num_data_shards as num_data_shards
from jaxjac._src.mesh import replicated_sharding as replicated_sharding

# Output-sharding names accepted by `shard_fn`.
_OUT_KINDS = ("replicated", "batch")


def _to_sharding(kind: Any, mesh: Mesh, name: str) -> Any:
  if isinstance(kind, str):
    checks.check_choice(kind, name, _OUT_KINDS)
    return data_sharding(mesh) if kind == "batch" else replicated_sharding(mesh)
  return jax.tree.map(lambda k: _to_sharding(k, mesh, name), kind)


class LowerableFn(Protocol):
  """A function compiled on call that, like ``jax.jit``'s, also compiles ahead of time:
  ``fn.lower(*args).compile()``."""

  def __call__(self, *args: Any) -> Any: ...

  def lower(self, *args: Any) -> Any: ...


def shard_fn(
  fn: Callable[..., Any],
  mesh: Mesh,
  *,
  batch_argnums: Sequence[int] = (),
  out_shardings: Any = "replicated",
  donate_argnums: Sequence[int] = (),
) -> LowerableFn:
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
  wrapped.lower = lambda *args: jitted_for(len(args)).lower(*place(args))  # type: ignore[attr-defined]
  return cast(LowerableFn, wrapped)


def shard_train_step(
  train_step: Callable[..., Any],
  mesh: Mesh,
  *,
  donate_state: bool = True,
) -> LowerableFn:
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
    >>> round(float(w), 6)
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
