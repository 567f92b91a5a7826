"""First-order robust losses and their Jacobian upper bounds (Wu and Li 2024).

For an l_p attack of radius eps the adversarially robust loss is
``max_{||delta||_p <= eps} l(f(x + delta), y)``. Its first-order expansion is

.. math::
  \\ell(f(x), y) + \\epsilon \\, \\|\\nabla_x \\ell\\|_q, \\qquad 1/p + 1/q = 1,

and with ``g = grad_z l`` (the gradient with respect to the logits) the chain
rule gives ``grad_x l = J^T g``. Bounding this by Jacobian norms:

* ``p = 2`` (``q = 2``): ``||J^T g||_2 <= ||J||_2 ||g||_2 <= ||J||_F ||g||_2``.
* ``p = inf`` (``q = 1``): ``||J^T g||_1 = sum_j |sum_c J_cj g_c|
  <= ||g||_inf sum_cj |J_cj| = ||g||_inf ||J||_{1,1}``.

For softmax cross-entropy, ``g = softmax(z) - onehot(y)``. With ``p_y`` the
probability of the true class, ``g_y = p_y - 1`` and ``g_c = p_c`` for
``c != y``, where ``sum_{c != y} p_c = 1 - p_y``. Hence

* ``||g||_inf = max(1 - p_y, max_{c != y} p_c) = 1 - p_y <= 1``;
* ``||g||_2^2 = (1 - p_y)^2 + sum_{c != y} p_c^2 <= 2 (1 - p_y)^2 <= 2``.

The surrogate losses are therefore

.. math::
  \\ell + \\sqrt{2}\\, \\epsilon \\|J\\|_F \\quad (p = 2), \\qquad
  \\ell + \\epsilon \\|J\\|_{1,1} \\quad (p = \\infty),

each an upper bound of the first-order robust loss for every model and input.
For another loss, pass ``grad_bound``: a bound on ``||g||_2`` (``p = 2``) or
``||g||_inf`` (``p = inf``).

References:
  Wu, Li. Adversarially robust generalization theory via Jacobian
  regularization. arXiv:2412.12449, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxjac._src import checks
from jaxjac._src import jacobian as jac_lib
from jaxjac._src.jacobian import ApplyFn, Params
from jaxjac._src.penalty import REDUCTIONS, jacobian_penalty, reduce

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

# Bounds on ||grad_z l||_{dual} for softmax cross-entropy, derived above.
CE_GRAD_BOUND = {2.0: math.sqrt(2.0), math.inf: 1.0}


def _check_labels_match(x: Any, y: Any) -> None:
  """One label per example of `x` (shapes only: the values may be traced)."""
  if jnp.ndim(y) < 1 or jnp.shape(y)[0] != jnp.shape(x)[0]:
    raise ValueError(
      f"`y` must hold one label per example of `x`: got shape {jnp.shape(y)} for "
      f"{jnp.shape(x)[0]} examples."
    )


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Per-example cross-entropy with integer labels, shape ``(B,)``.

  .. math::
    \\ell(z, y) = -\\log \\operatorname{softmax}(z)_y
    = \\log \\textstyle\\sum_c e^{z_c} - z_y .

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> z = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
    >>> round(float(jaxjac.softmax_cross_entropy(z, jnp.array([1]))[0]), 4)  # -log 0.25
    1.3863
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def safe_norm(v: jax.Array, ord: float) -> jax.Array:
  """``||v||_ord`` over the last axis with finite, correct derivatives at and near 0.

  For ``ord=2`` the vector is divided by ``m = max_j |v_j|`` (held constant)
  before squaring, ``||v||_2 = m ||v / m||_2``, so squares that would
  underflow (a confident example's tiny gradient) give the right value and
  the derivative ``v / ||v||``; at ``v = 0`` exactly the value is 0 with
  derivative 0 (a subgradient), where ``jnp.linalg.norm`` gives NaN.
  """
  if ord == 1:
    return jnp.sum(jnp.abs(v), axis=-1)
  m = jax.lax.stop_gradient(jnp.max(jnp.abs(v), axis=-1, keepdims=True))
  zero = m == 0
  scaled = v / jnp.where(zero, jnp.ones_like(m), m)
  sq = jnp.sum(jnp.square(scaled), axis=-1, keepdims=True)
  norm = m * jnp.sqrt(jnp.where(zero, jnp.ones_like(sq), sq))
  return jnp.where(zero, jnp.zeros_like(norm), norm)[..., 0]


def _safe_sqrt(s: jax.Array) -> jax.Array:
  """``sqrt(s)`` for ``s >= 0`` with derivative 0 (not inf, then NaN) at ``s = 0``."""
  pos = s > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, jnp.ones_like(s))), jnp.zeros_like(s))


def input_gradient(
  loss_fn: LossFn,
  apply_fn: ApplyFn,
  params: Params,
  x: ArrayLike,
  y: ArrayLike,
  *,
  mixes_batch: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Per-example losses ``(B,)`` and their input gradients ``(B, ...)``.

  .. math::
    \\nabla_{x_b} \\ell_b = J_b^\\top \\nabla_{z_b} \\ell(z_b, y_b),

  one VJP of the batched logits (or, with ``mixes_batch=True``, of each
  example's diagonal block; see :func:`jaxjac.jacobian`).

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.zeros((3, 2)).at[0, 0].set(2.)  # at x = 0: z = 0, grad_z = (0.5, -0.5)
    >>> losses, g = jaxjac.input_gradient(jaxjac.softmax_cross_entropy,
    ...     lambda p, x: x @ p, w, jnp.zeros((1, 3)), jnp.array([1]))
    >>> g.tolist()  # J^T grad_z with J = w^T: (2 * 0.5, 0, 0)
    [[1.0, 0.0, 0.0]]
  """
  f = jac_lib.batch_fn(apply_fn, params)
  ops = jac_lib._make_ops(f, x, mixes_batch)
  x = jnp.asarray(x)  # as _make_ops traced it
  logits = f(x)
  losses, g = jax.vmap(jax.value_and_grad(lambda z, t: loss_fn(z[None], t[None])[0]))(logits, y)
  grads = ops.vjp_many(g.reshape(1, x.shape[0], -1))[0]
  return losses, grads.reshape(x.shape)


def first_order_robust_loss(
  loss_fn: LossFn, apply_fn: ApplyFn, params: Params, x: ArrayLike, y: ArrayLike, *,
  eps: float, p: float | str, mixes_batch: bool = False, reduction: str = "mean",
) -> jax.Array:  # fmt: skip
  """First-order approximation of the l_p adversarially robust loss.

  .. math::
    \\ell(f(x), y) + \\epsilon \\, \\|\\nabla_x \\ell(f(x), y)\\|_q,
    \\qquad q = p / (p - 1)\\ (p = 2 \\to q = 2,\\ p = \\infty \\to q = 1).

  Args:
    loss_fn: ``loss_fn(logits, y) -> (B,)`` per-example losses, e.g.
      :func:`softmax_cross_entropy`.
    apply_fn, params, x: as in :func:`jaxjac.jacobian_penalty`.
    y: targets for ``loss_fn``, leading dim ``B``.
    eps: attack radius, >= 0.
    p: attack norm, ``2`` or ``inf``.
    mixes_batch: see :func:`jaxjac.jacobian`.
    reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (``(B,)``).

  The dual norm is computed safely (:func:`safe_norm`): where a confident
  example's loss gradient is exactly zero (or its squares underflow) the
  parameter gradient stays finite and correct, instead of NaN for the whole
  batch.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[3.], [4.]])  # two logits: z = (x w, 0)
    >>> apply_fn = lambda p, x: jnp.concatenate([x @ p, jnp.zeros((x.shape[0], 1))], 1)
    >>> # At x = 0: loss log 2, grad_z = (0.5, -0.5) for y = 1, grad_x = 0.5 w, norm 2.5.
    >>> v = jaxjac.first_order_robust_loss(jaxjac.softmax_cross_entropy, apply_fn, w,
    ...     jnp.zeros((1, 2)), jnp.array([1]), eps=0.1, p=2)
    >>> round(float(v), 4)  # log 2 + 0.1 * 2.5
    0.9431
  """
  checks.check_eps(eps)
  q = {2.0: 2, math.inf: 1}[checks.canonical_p(p)]
  checks.check_choice(reduction, "reduction", REDUCTIONS)
  checks.check_float_array(x, "x")
  checks.check_finite(x, "x")
  _check_labels_match(x, y)
  losses, grads = input_gradient(loss_fn, apply_fn, params, x, y, mixes_batch=mixes_batch)
  dual = safe_norm(grads.reshape(grads.shape[0], -1), q)  # grads: x's shape
  return reduce(losses + eps * dual, reduction)


def jacobian_surrogate_loss(
  loss_fn: LossFn, apply_fn: ApplyFn, params: Params, x: ArrayLike, y: ArrayLike, *,
  eps: float, p: float | str, grad_bound: float | None = None, key: jax.Array | None = None,
  estimator: str = "exact", num_projections: int = 1, mixes_batch: bool = False,
  reduction: str = "mean",
) -> jax.Array:  # fmt: skip
  """Jacobian-regularized surrogate of the robust loss (Wu and Li 2024).

  .. math::
    \\ell(f(x), y) + \\epsilon\\, K_p\\, N_p(J), \\qquad
    N_2 = \\|J\\|_F,\\ N_\\infty = \\|J\\|_{1,1},

  with ``K_2 = sqrt(2)`` and ``K_inf = 1`` for softmax cross-entropy (derived
  in the module docstring), an upper bound of
  :func:`first_order_robust_loss` for every model and input when
  ``estimator="exact"``. The random estimators estimate ``||J||_F^2`` or
  ``||J||_{1,1}`` without bias; the square root makes the ``p = 2`` value a
  slight underestimate in expectation.

  Args:
    loss_fn: per-example loss ``loss_fn(logits, y) -> (B,)``.
    apply_fn, params, x, key, estimator, num_projections, mixes_batch: as in
      :func:`jaxjac.jacobian_penalty`.
    y: targets, leading dim ``B``.
    eps: attack radius, >= 0.
    p: ``2`` or ``inf``.
    grad_bound: ``K_p``, a bound on ``||grad_z l||_2`` (p = 2) or
      ``||grad_z l||_inf`` (p = inf); ``None`` takes the softmax
      cross-entropy constants.
    reduction: ``"mean"``, ``"sum"`` or ``"none"``.

  For ``p = 2`` the square root is taken safely: where ``J_b = 0`` (dead ReLUs,
  a locally constant model) the parameter gradient is finite (the subgradient
  0), not NaN.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[3.], [4.]])  # J = (w^T; 0): ||J||_F = 5, ||J||_{1,1} = 7
    >>> apply_fn = lambda p, x: jnp.concatenate([x @ p, jnp.zeros((x.shape[0], 1))], 1)
    >>> x, y = jnp.zeros((1, 2)), jnp.array([1])
    >>> ce = jaxjac.softmax_cross_entropy
    >>> round(float(jaxjac.jacobian_surrogate_loss(ce, apply_fn, w, x, y, eps=0.1, p="inf")), 4)
    1.3931
  """
  checks.check_eps(eps)
  p = checks.canonical_p(p)
  bound = CE_GRAD_BOUND[p] if grad_bound is None else grad_bound
  checks.check_eps(bound, "grad_bound")
  checks.check_choice(reduction, "reduction", REDUCTIONS)
  _check_labels_match(x, y)
  norm = "frobenius" if p == 2.0 else "l11"
  values = jacobian_penalty(
    apply_fn, params, x, key=key, norm=norm, estimator=estimator,
    num_projections=num_projections, mixes_batch=mixes_batch, reduction="none",
  )  # fmt: skip
  if norm == "frobenius":
    values = _safe_sqrt(values)
  losses = loss_fn(apply_fn(params, jnp.asarray(x)), jnp.asarray(y))
  return reduce(losses + eps * bound * values, reduction)
