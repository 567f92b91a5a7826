"""Mixed precision: low-precision compute, float32 parameters and penalties.

:func:`mixed_precision` wraps any ``apply_fn(params, x) -> logits`` so that
the forward pass (and with it every VJP/JVP through it) runs in a compute
dtype, by default ``bfloat16``, while everything around it stays ``float32``:

* the parameters are stored, updated and differentiated in float32 (the cast
  happens inside the wrapper, so gradients flow back through it and arrive in
  float32);
* the inputs ``x`` stay float32 outside the wrapper, so input Jacobian
  products ``v^T J`` (the VJP of the cast) come out in float32;
* the logits are cast back to float32, so losses, softmax, and the penalty's
  sums of squares ``C/n sum ||v^T J||^2`` (and the batch means) accumulate in
  float32.

Only the matrix products and convolutions inside the model run in bfloat16
(8 significant bits, a relative rounding error of ``2^-9``), which is what
makes them fast on accelerators with bfloat16 units. Integer and boolean
leaves of ``params`` (step counters) and of ``x`` are left alone.

Example::

  apply_bf16 = jaxjac.precision.mixed_precision(model.apply)
  penalty = jaxjac.jacobian_penalty(apply_bf16, {"params": params}, x)  # float32
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxjac._src import checks

PRECISIONS = ("float32", "bfloat16", "float16")


def _float_dtype(dtype: Any, name: str) -> jnp.dtype:
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    raise TypeError(
      f"`{name}` must be a floating dtype such as jnp.bfloat16, got {dtype!r}."
    ) from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise TypeError(f"`{name}` must be a floating dtype such as jnp.bfloat16, got {dt}.")
  return dt


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts the floating-point leaves of a pytree to ``dtype``; other leaves unchanged.

  Example:
    >>> import jax.numpy as jnp
    >>> out = cast_floating({"w": jnp.ones(2), "step": jnp.int32(3)}, jnp.bfloat16)
    >>> str(out["w"].dtype), str(out["step"].dtype)
    ('bfloat16', 'int32')
  """
  dt = _float_dtype(dtype, "dtype")

  def cast(leaf):
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf.astype(dt)
    return leaf

  return jax.tree.map(cast, tree)


def mixed_precision(
  apply_fn: Callable[..., Any],
  *,
  compute_dtype: Any = jnp.bfloat16,
  output_dtype: Any = jnp.float32,
) -> Callable[..., Any]:
  """Wraps ``apply_fn`` to compute in ``compute_dtype`` and return ``output_dtype``.

  .. math::
    \\tilde f(\\theta, x) = \\mathrm{cast}_{\\mathrm{out}}\\big(
    f(\\mathrm{cast}_{\\mathrm{c}}(\\theta), \\mathrm{cast}_{\\mathrm{c}}(x))\\big).

  The casts are differentiable (their VJPs cast back), so
  ``jax.grad`` with respect to float32 ``params`` is float32, and so are the
  input Jacobian products used by :func:`jaxjac.jacobian_penalty`. The
  wrapped function keeps the signature of ``apply_fn``: extra positional and
  keyword arguments (``train=True``, ``rngs=...``, ``mutable=...``) pass
  through unchanged; floating outputs (also inside tuples, e.g. with
  ``mutable``) are cast to ``output_dtype``.

  Args:
    apply_fn: ``apply_fn(params, x, *args, **kwargs)``, e.g. a Flax
      ``model.apply``.
    compute_dtype: dtype of the forward pass, ``jnp.bfloat16`` by default.
    output_dtype: dtype of the returned logits, ``jnp.float32`` by default.

  Returns:
    The wrapped ``apply_fn``.

  Raises:
    TypeError: ``apply_fn`` not callable, or a non-floating dtype.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> apply_fn = lambda w, x: x @ w
    >>> w, x = jnp.full((3, 2), 0.1), jnp.ones((4, 3))
    >>> bf16 = mixed_precision(apply_fn)
    >>> str(bf16(w, x).dtype)  # computed in bfloat16, returned in float32
    'float32'
    >>> str(jaxjac.jacobian(bf16, w, x).dtype)
    'float32'
  """
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  compute = _float_dtype(compute_dtype, "compute_dtype")
  output = _float_dtype(output_dtype, "output_dtype")

  @functools.wraps(apply_fn)
  def wrapped(params, x, *args, **kwargs):
    out = apply_fn(cast_floating(params, compute), cast_floating(x, compute), *args, **kwargs)
    return cast_floating(out, output)

  return wrapped


def with_precision(apply_fn: Callable[..., Any], precision: str) -> Callable[..., Any]:
  """``apply_fn`` itself for ``"float32"``, else :func:`mixed_precision` in that dtype.

  For configurations: ``precision`` is one of ``"float32"``, ``"bfloat16"``,
  ``"float16"``.

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda w, x: x @ w
    >>> with_precision(f, "float32") is f
    True
    >>> with_precision(f, "float16")(jnp.ones((2, 1)), jnp.ones((1, 2))).dtype
    dtype('float32')
  """
  checks.check_choice(precision, "precision", PRECISIONS)
  if precision == "float32":
    return apply_fn
  return mixed_precision(apply_fn, compute_dtype=jnp.dtype(precision))
