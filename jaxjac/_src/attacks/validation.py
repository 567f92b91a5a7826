"""The one validation path of the attacks and the robustness evaluation.

Checks of static information (types, shapes, dtypes, choices) always run.
Checks of values (``x`` finite and in the box, labels in range, ``eps >= 0``)
run on the host when the values are concrete. Under a trace (inside
``jax.jit``) they cannot run at trace time; with ``checked=True`` they are
staged as ``jax.experimental.checkify`` checks instead, which raise once the
caller wraps the jitted function with ``checkify.checkify`` and calls
``err.throw()``:

.. code-block:: python

  from jax.experimental import checkify

  @jax.jit
  def step(params, x, y, key):
    return attacks.pgd(apply_fn, params, x, y, eps=0.3, norm="linf", steps=10,
                       key=key, checked=True)

  err, x_adv = checkify.checkify(step)(params, x, y, key)
  err.throw()  # ValueError naming the argument, e.g. "`eps` must be >= 0"

Without ``checked``, invalid examples come back as NaN (see
:mod:`jaxjac._src.attacks.core`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxjac._src import checks
from jaxjac._src.attacks import losses as losses_lib
from jaxjac._src.attacks.core import METHODS, SELECTS, AttackConfig
from jaxjac._src.attacks.norms import NORMS


def is_concrete(a: Any) -> bool:
  return not isinstance(a, jax.core.Tracer)


def check_apply_fn(apply_fn: Any) -> None:
  """``apply_fn`` must be callable and hashable (a static argument of the jitted core)."""
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  try:
    hash(apply_fn)
  except TypeError:
    raise TypeError(
      "`apply_fn` must be hashable (it is a static argument of the jitted attack); "
      "pass e.g. `model.apply` or a module-level function."
    ) from None


def check_key(key: Any, *, needed_by: str) -> None:
  """A single PRNG key: a scalar typed key (``jax.random.key``) or a legacy ``uint32[2]``."""
  checks.check_key(key, needed_by=needed_by)
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  legacy = dtype == np.uint32 and np.shape(key) == (2,)
  if not (typed and np.shape(key) == () or legacy):
    raise TypeError(
      f"`key` must be one PRNG key (a scalar made by `jax.random.key(seed)`; split it "
      f"with `jax.random.split` for several), got {type(key).__name__} "
      f"of shape {np.shape(key)} and dtype {dtype}."
    )


def check_bounds(bounds: Any) -> tuple[float, float]:
  """Returns ``bounds`` as a pair of Python floats ``low < high``, else raises."""
  try:
    lo, hi = (float(b) for b in bounds)
  except (TypeError, ValueError):
    raise TypeError(f"`bounds` must be a pair of floats (low, high), got {bounds!r}.") from None
  if math.isnan(lo) or math.isnan(hi) or not lo < hi:
    raise ValueError(f"`bounds` must satisfy low < high, got {bounds!r}.")
  return lo, hi


def check_scalar(value: Any, name: str) -> None:
  """A scalar ``>= 0`` and finite when concrete (``eps``, ``step_size``)."""
  if np.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
  checks.check_eps(value, name)


def check_in_box(x: Any, bounds: tuple[float, float], name: str = "x") -> None:
  """Raises ValueError if a concrete ``x`` is not finite or has entries outside ``bounds``."""
  if not is_concrete(x) or np.size(x) == 0:
    return
  values = np.asarray(x)
  finite = np.isfinite(values)
  if not finite.all():
    where = np.argwhere(~finite)[0]
    raise ValueError(
      f"`{name}` must be finite, got {values[tuple(where)]} at index {tuple(where.tolist())}."
    )
  lo, hi = float(values.min()), float(values.max())
  if lo < bounds[0] or hi > bounds[1]:
    raise ValueError(
      f"`{name}` must lie in the box bounds={bounds}, got values in [{lo:.6g}, {hi:.6g}]; "
      "rescale the inputs or pass `bounds`."
    )


def check_labels(labels: Any, name: str, batch: int, num_classes: int) -> None:
  """Integer class indices of shape ``(batch,)``, in ``[0, num_classes)`` when concrete."""
  dtype = getattr(labels, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{name}` must be an integer array of class indices, got {labels!r:.80}.")
  if tuple(np.shape(labels)) != (batch,):
    raise ValueError(f"`{name}` must have shape ({batch},) like x's batch, got {np.shape(labels)}.")
  if is_concrete(labels) and batch:
    values = np.asarray(labels)  # On the host: jnp ops would be staged under a trace.
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
      raise ValueError(
        f"`{name}` must lie in [0, {num_classes}) for logits with {num_classes} classes, "
        f"got values in [{lo}, {hi}]."
      )


@functools.lru_cache(maxsize=128)
def _cached_logits_shape(apply_fn, params_struct, x_struct) -> tuple[int, ...]:
  treedef, leaves = params_struct

  def fn(xb):  # Under eval_shape the zeros are abstract: nothing is allocated.
    params = jax.tree.unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in leaves])
    return apply_fn(params, xb)

  return checks.batch_output_shape(fn, jax.ShapeDtypeStruct(*x_struct))


def num_classes(apply_fn: Any, params: Any, x: Any) -> int:
  """``C`` of ``apply_fn``'s logits ``(B, C)``, traced once per model and input shapes."""
  leaves, treedef = jax.tree.flatten(params)
  x_struct = (tuple(np.shape(x)), jnp.result_type(x))
  try:
    structs = tuple((tuple(np.shape(v)), jnp.result_type(v)) for v in leaves)
    shape = _cached_logits_shape(apply_fn, (treedef, structs), x_struct)
  except TypeError:  # Non-array leaves: no caching.
    shape = checks.batch_output_shape(
      lambda xb: apply_fn(params, xb), jax.ShapeDtypeStruct(*x_struct)
    )
  if len(shape) != 2:
    raise ValueError(f"`apply_fn` must return logits of shape (B, C), got {shape}.")
  return shape[1]


def check_inputs(
  apply_fn: Any, params: Any, x: Any, y: Any, *, bounds: tuple[float, float], names=("x", "y")
) -> int:
  """Checks a batch ``(x, y)`` against the model; returns the number of classes."""
  checks.check_float_array(x, names[0], min_ndim=2)
  if np.shape(x)[0] == 0:
    raise ValueError(f"`{names[0]}` must hold at least one example, got shape {np.shape(x)}.")
  classes = num_classes(apply_fn, params, x)
  check_labels(y, names[1], np.shape(x)[0], classes)
  check_in_box(x, bounds, names[0])
  return classes


def check_loss(loss: Any, classes: int, *, targeted: bool, where: str = "") -> None:
  checks.check_choice(loss, f"{where}loss", losses_lib.LOSSES)
  need = losses_lib.MIN_CLASSES[loss][int(targeted)]
  if classes < need:
    kind = "targeted " if targeted else ""
    raise ValueError(
      f"{where}{kind}loss={loss!r} needs at least {need} classes, the logits have {classes}."
    )


def _staged_checks(x, y, target, eps, bounds, classes) -> None:
  """``checkify`` checks of the values a trace hides (``checked=True``)."""
  checkify.check(jnp.all(jnp.isfinite(x)), "`x` must be finite (got NaN or inf).")
  checkify.check(
    jnp.all((x >= bounds[0]) & (x <= bounds[1])), f"`x` must lie in the box bounds={bounds}."
  )
  checkify.check(jnp.all((y >= 0) & (y < classes)), f"`y` must lie in [0, {classes}).")
  if target is not None:
    checkify.check(
      jnp.all((target >= 0) & (target < classes)), f"`target` must lie in [0, {classes})."
    )
    checkify.check(jnp.all(target != y), "`target` must differ from the true label `y`.")
  checkify.check(eps >= 0, "`eps` must be a finite number >= 0 (got {eps}).", eps=eps)


def prepare(
  method: str,
  apply_fn: Any,
  params: Any,
  x: Any,
  y: Any,
  *,
  eps: Any,
  norm: Any,
  steps: Any,
  restarts: Any,
  loss: Any,
  target: Any,
  random_start: Any,
  select: Any,
  bounds: Any,
  key: Any,
  step_size: Any,
  checked: Any,
) -> tuple[AttackConfig, tuple]:
  """Validates an attack's arguments; returns the static config and the traced arguments."""
  check_apply_fn(apply_fn)
  checks.check_choice(method, "method", METHODS)
  checks.check_choice(norm, "norm", NORMS)
  checks.check_choice(select, "select", SELECTS)
  steps = checks.check_positive_int(steps, "steps")
  restarts = checks.check_positive_int(restarts, "restarts")
  for flag, name in ((random_start, "random_start"), (checked, "checked")):
    if not isinstance(flag, bool):
      raise TypeError(f"`{name}` must be a bool, got {flag!r}.")
  if restarts > 1 and not random_start:
    raise ValueError(
      f"`restarts`={restarts} needs `random_start=True`: without a random start every "
      "restart repeats the same run."
    )
  if (random_start or restarts > 1) and method != "fgsm":
    check_key(key, needed_by=f"{method} with a random start")
  bounds = check_bounds(bounds)
  check_scalar(eps, "eps")
  if step_size is not None:
    check_scalar(step_size, "step_size")
  classes = check_inputs(apply_fn, params, x, y, bounds=bounds)
  if loss == "pair" and target is None:
    raise ValueError("`target` is required by loss='pair' (the fixed class t in z_t - z_y).")
  if target is not None:
    check_labels(target, "target", x.shape[0], classes)
    if is_concrete(target) and is_concrete(y) and np.any(np.asarray(target) == np.asarray(y)):
      raise ValueError("`target` must differ from the true label `y` for every example.")
  check_loss(loss, classes, targeted=target is not None)
  eps = jnp.asarray(eps, x.dtype)
  if checked:
    _staged_checks(x, y, target, eps, bounds, classes)
  config = AttackConfig(
    method=method,
    norm=norm,
    steps=steps,
    restarts=restarts,
    loss=loss,
    targeted=target is not None,
    random_start=random_start,
    select=select,
    bounds=bounds,
  )
  step_size = jnp.asarray(0.0 if step_size is None else step_size, x.dtype)
  if key is None:
    key = jax.random.key(0)  # Unused: no randomness in this configuration.
  target = y if target is None else target
  return config, (params, x, y, target, eps, step_size, key)
