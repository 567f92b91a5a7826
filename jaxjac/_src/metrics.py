"""Evaluation metrics shared by the training loop, the experiments and the quickstart.

* :func:`accuracy`: clean accuracy over batches.
* :func:`jacobian_frobenius_norm`: the mean exact ``||J_b||_F`` Hoffman et
  al. report (the norm, not its square).
* :func:`to_jsonable`: the one converter of records to JSON (arrays to lists,
  non-finite floats to the strings ``"nan"``, ``"inf"``, ``"-inf"``).

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxjac._src import checks
from jaxjac._src.jacobian import ApplyFn
from jaxjac._src.penalty import jacobian_penalty


@functools.partial(jax.jit, static_argnums=0)
def _num_correct(apply_fn, params, x, y):
  return jnp.sum(jnp.argmax(apply_fn(params, x), -1) == y)


@functools.partial(jax.jit, static_argnums=0)
def _sum_fro(apply_fn, params, x):
  sq = jacobian_penalty(apply_fn, params, x, norm="frobenius", estimator="exact", reduction="none")
  return jnp.sum(jnp.sqrt(sq))


def _batched_sum(fn, n: int, batch_size: int | None, *arrays: Any) -> float:
  """``sum_i fn(arrays[lo:hi])`` over consecutive batches, accumulated in float64.

  ``arrays``: anything sliced along its first axis (arrays, nested lists).
  """
  size = n if batch_size is None else checks.check_positive_int(batch_size, "batch_size")
  if n == 0:
    raise ValueError("the evaluation set is empty; pass at least one example.")
  return sum(float(fn(*(a[lo : lo + size] for a in arrays))) for lo in range(0, n, size))


def accuracy(
  apply_fn: ApplyFn,
  params: Any,
  images: ArrayLike,
  labels: ArrayLike,
  *,
  batch_size: int = 1000,
) -> float:
  """Clean accuracy of ``apply_fn(params, .)`` on ``images``, in batches.

  .. math::
    \\frac{1}{N} \\sum_{i=1}^N [\\arg\\max_c f(x_i)_c = y_i]

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda p, x: x.reshape(x.shape[0], -1)[:, :3] * p
    >>> accuracy(f, 1.0, jnp.eye(3).reshape(3, 3, 1, 1), jnp.array([0, 1, 0]), batch_size=2)
    0.6666666666666666
  """
  n = int(np.shape(labels)[0])
  correct = _batched_sum(
    functools.partial(_num_correct, apply_fn, params), n, batch_size, images, labels
  )
  return correct / n


def jacobian_frobenius_norm(
  apply_fn: ApplyFn, params: Any, x: ArrayLike, *, batch_size: int | None = None
) -> float:
  """Mean per-example ``||J_b||_F`` (exact), the norm Hoffman et al. report.

  .. math::
    \\frac{1}{B} \\sum_b \\|J_b\\|_F, \\qquad J_b = \\partial z_b / \\partial x_b.

  Note that this averages the norm, not its square (the training penalty).
  ``batch_size`` bounds the memory of the dense Jacobians (``None``: all at once).

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda p, x: p * x.reshape(x.shape[0], -1)
    >>> jacobian_frobenius_norm(f, 3.0, jnp.ones((2, 4)))  # J = 3 I_4: ||J||_F = 6
    6.0
  """
  n = int(np.shape(x)[0])
  return _batched_sum(functools.partial(_sum_fro, apply_fn, params), n, batch_size, x) / n


def to_jsonable(value: Any) -> Any:
  """`value` for ``json.dump``: mappings with string keys, arrays and tuples as lists,
  NumPy scalars as Python numbers, non-finite floats as ``"nan"``/``"inf"``/``"-inf"``.

  Example:
    >>> import numpy as np
    >>> to_jsonable({"a": np.array([1.0, np.inf]), 2: (np.float32(0.5),)})
    {'a': [1.0, 'inf'], '2': [0.5]}
  """
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value
