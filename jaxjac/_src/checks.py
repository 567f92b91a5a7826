"""Argument validation shared by the public functions.

Every check raises `ValueError` or `TypeError` with a message that names the
offending argument and says what was expected. Checks only read static
information (shapes, dtypes, Python values), so they run at trace time and
cost nothing inside `jax.jit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def check_key(key: Any, *, needed_by: str) -> None:
  """Raises ValueError if a PRNG key is required but missing."""
  if key is None:
    raise ValueError(
      f"`key` is required by {needed_by}; pass one, e.g. `key=jax.random.key(0)` "
      "(inside a training step, `jax.random.fold_in(key, step)`)."
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


def batch_output_shape(fn, x: jax.Array, *, fn_name: str = "apply_fn") -> tuple[int, ...]:
  """Shape of `fn(x)`, checked to be a floating array with x's batch dimension."""
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
  return tuple(shape)
