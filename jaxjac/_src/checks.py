"""Argument validation shared by the public functions.

Every check raises `ValueError` or `TypeError` with a message that names the
offending argument and says what was expected. Most checks only read static
information (shapes, dtypes, Python values), so they run at trace time and
cost nothing inside `jax.jit`. :func:`check_finite` reads values: it checks
concrete arrays eagerly and, with ``checked=True``, stages a
``jax.experimental.checkify`` check for traced ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def check_choice(value: Any, name: str, options: Sequence[str]) -> str:
  """Returns `value` if it is one of `options`, else raises ValueError."""
  if not isinstance(value, str) or value not in options:
    raise ValueError(f"`{name}` must be one of {tuple(options)}, got {value!r}.")
  return value


def check_float_array(x: Any, name: str, *, min_ndim: int = 1) -> None:
  """Raises TypeError unless `x` is a floating-point array of ndim >= min_ndim."""
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    raise TypeError(f"`{name}` must be a jax or numpy array, got {type(x).__name__}.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
      f"`{name}` must have a floating-point dtype (e.g. float32), got {dtype}; "
      f"convert it, e.g. `{name}.astype(jnp.float32) / 255.`."
    )
  if np.ndim(x) < min_ndim:
    raise ValueError(
      f"`{name}` must have a leading batch dimension (ndim >= {min_ndim}), got shape {np.shape(x)}."
    )


def check_positive_int(value: Any, name: str) -> int:
  """Returns `value` if it is a Python int >= 1, else raises."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int >= 1, got {value!r}.")
  if value < 1:
    raise ValueError(f"`{name}` must be >= 1, got {value}.")
  return int(value)


def check_nonempty_batch(x: Any, name: str = "x") -> None:
  """Raises ValueError if the leading (batch) dimension of `x` is 0."""
  if np.shape(x)[0] == 0:
    raise ValueError(
      f"`{name}` must hold at least one example, got an empty batch of shape {np.shape(x)}."
    )


_KEY_HELP = (
  "a key is the state of jax.random, made by `jax.random.key(seed)` (e.g. "
  "`jax.random.key(0)`), not a seed"
)


def validate_key(key: Any, name: str = "key") -> None:
  """Raises unless `key` is one PRNG key: a typed key of shape () or a raw uint32 key.

  A Python or NumPy integer (a seed), a float array, or a batch of keys gets
  an error saying what a key is and how to make one.
  """
  if isinstance(key, (bool, int, np.integer)):
    raise TypeError(f"`{name}` must be a PRNG key, got the integer {key!r}; {_KEY_HELP}.")
  dtype = getattr(key, "dtype", None)
  if dtype is None:
    raise TypeError(f"`{name}` must be a PRNG key, got {type(key).__name__}; {_KEY_HELP}.")
  shape = tuple(np.shape(key))
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    batch_shape = shape
  elif dtype == np.uint32 and len(shape) >= 1:
    batch_shape = shape[:-1]  # raw (legacy) keys: the last axis holds the key data
  else:
    raise TypeError(
      f"`{name}` must be a PRNG key, got an array of dtype {dtype}, shape {shape}; {_KEY_HELP}."
    )
  if batch_shape:
    raise ValueError(
      f"`{name}` must be a single PRNG key, got a batch of keys of shape {batch_shape}; "
      f"to draw several, make one key with `jax.random.key(0)`, split it with "
      f"`keys = jax.random.split(key, n)` and pass one of them, `keys[i]`."
    )


def check_key(key: Any, *, needed_by: str, name: str = "key") -> jax.Array:
  """Raises ValueError if a PRNG key is required but missing, else :func:`validate_key`.

  Returns:
    ``key``, known from here on not to be ``None``.
  """
  if key is None:
    raise ValueError(
      f"`{name}` is required by {needed_by}; pass one, e.g. `{name}=jax.random.key(0)` "
      "(inside a training step, `jax.random.fold_in(key, step)`)."
    )
  validate_key(key, name)
  return key


def is_concrete(x: Any) -> bool:
  """Whether the values of `x` are known now (not a tracer inside jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_finite(x: Any, name: str = "x", *, checked: bool = False) -> None:
  """Raises ValueError if concrete `x` holds a NaN or an infinity.

  Concrete arrays are checked at once (one reduction and a scalar transfer).
  A traced `x` (inside ``jax.jit``, ``grad`` of `x`, ``vmap`` over `x`) has no
  values yet: with ``checked=True`` the check is staged with
  ``jax.experimental.checkify.check``, so the caller must be wrapped in
  ``checkify.checkify`` (then ``err.throw()`` raises); with ``checked=False``
  a traced `x` is not checked.
  """
  if is_concrete(x):
    with jax.ensure_compile_time_eval():  # concrete even while an outer jit traces
      ok = bool(np.isfinite(x).all() if isinstance(x, np.ndarray) else jnp.isfinite(x).all())
    if not ok:
      nans = int(np.isnan(np.asarray(x)).sum())
      infs = int(np.isinf(np.asarray(x)).sum())
      raise ValueError(
        f"`{name}` must be finite, got {nans} NaN and {infs} infinite entries "
        f"of {int(np.size(x))} (shape {tuple(np.shape(x))})."
      )
  elif checked:
    checkify.check(
      jnp.all(jnp.isfinite(x)), f"`{name}` must be finite, got NaN or infinite entries."
    )


def check_eps(eps: Any, name: str = "eps") -> None:
  """Raises ValueError if a concrete `eps` is negative or not finite."""
  try:
    value = float(eps)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # A traced eps cannot be checked at trace time.
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"`{name}` must be a finite number >= 0, got {eps!r}.")


def canonical_p(p: Any) -> float:
  """Maps `p` in {2, inf} (also "2", "inf", "l2", "linf") to 2.0 or math.inf."""
  aliases = {"2": 2.0, "l2": 2.0, "inf": math.inf, "linf": math.inf}
  if isinstance(p, str) and p.lower() in aliases:
    return aliases[p.lower()]
  if isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(p, bool):
    if float(p) == 2.0:
      return 2.0
    if math.isinf(p) and p > 0:
      return math.inf
  raise ValueError(f"`p` must be 2 or inf (the attack's norm), got {p!r}.")


def batch_output_shape(
  fn, x: jax.Array | jax.ShapeDtypeStruct, *, fn_name: str = "apply_fn"
) -> tuple[int, ...]:
  """Shape of `fn(x)`, checked to be a floating array with x's batch dimension."""
  return batch_output_struct(fn, x, fn_name=fn_name).shape


def batch_output_struct(
  fn, x: jax.Array | jax.ShapeDtypeStruct, *, fn_name: str = "apply_fn"
) -> jax.ShapeDtypeStruct:
  """Shape and dtype of `fn(x)`, checked as in :func:`batch_output_shape`."""
  out = jax.eval_shape(fn, x)
  shape = getattr(out, "shape", None)
  if shape is None:
    raise ValueError(
      f"`{fn_name}` must return a single array of logits, got {type(out).__name__}; "
      "wrap it, e.g. `lambda p, x: model.apply(p, x, mutable=['batch_stats'])[0]`."
    )
  if len(shape) < 1 or shape[0] != x.shape[0]:
    raise ValueError(
      f"`{fn_name}` must return logits of shape (B, ...) with the batch size "
      f"B = {x.shape[0]} of `x`, got output shape {tuple(shape)} for input shape "
      f"{tuple(x.shape)}."
    )
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(f"`{fn_name}` must return floating-point logits, got {out.dtype}.")
  return jax.ShapeDtypeStruct(tuple(shape), out.dtype)
