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

import jax
import jax.numpy as jnp
import optax

from jaxjac._src import checks
from jaxjac._src import jacobian as jac_lib
from jaxjac._src.jacobian import ApplyFn, Params
from jaxjac._src.penalty import jacobian_penalty_per_example

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

# Bounds on ||grad_z l||_{dual} for softmax cross-entropy, derived above.
CE_GRAD_BOUND = {2.0: math.sqrt(2.0), math.inf: 1.0}


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy with integer labels, shape ``(B,)``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _reduce(values: jax.Array, reduction: str) -> jax.Array:
  checks.check_choice(reduction, "reduction", ("mean", "none"))
  return jnp.mean(values) if reduction == "mean" else values


def input_gradient(
  loss_fn: LossFn,
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  per_example: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Per-example losses ``(B,)`` and their input gradients ``(B, ...)``.

  ``grad_x l_b = J_b^T grad_z l_b``, one VJP of the batched logits (or, with
  ``per_example=True``, of each example's diagonal block; see
  :func:`jaxjac.jacobian`).
  """
  f = lambda xb: apply_fn(params, xb)
  ops = jac_lib._make_ops(f, x, per_example)
  logits = f(x)
  losses, g = jax.vmap(jax.value_and_grad(lambda z, t: loss_fn(z[None], t[None])[0]))(logits, y)
  grads = ops.vjp_many(g.reshape(1, x.shape[0], -1))[0]
  return losses, grads.reshape(x.shape)


def first_order_robust_loss(
  loss_fn: LossFn,
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  p: float | str,
  per_example: bool = False,
  reduction: str = "mean",
) -> jax.Array:
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
    per_example: see :func:`jaxjac.jacobian`.
    reduction: ``"mean"`` (scalar) or ``"none"`` (``(B,)``).
  """
  checks.check_eps(eps)
  q = {2.0: 2, math.inf: 1}[checks.canonical_p(p)]
  losses, grads = input_gradient(loss_fn, apply_fn, params, x, y, per_example=per_example)
  dual = jnp.linalg.norm(grads.reshape(x.shape[0], -1), ord=q, axis=-1)
  return _reduce(losses + eps * dual, reduction)


def jacobian_surrogate_loss(
  loss_fn: LossFn,
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float,
  p: float | str,
  grad_bound: float | None = None,
  key: jax.Array | None = None,
  estimator: str = "exact",
  num_projections: int = 1,
  per_example: bool = False,
  reduction: str = "mean",
) -> jax.Array:
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
    apply_fn, params, x, key, estimator, num_projections, per_example: as in
      :func:`jaxjac.jacobian_penalty`.
    y: targets, leading dim ``B``.
    eps: attack radius, >= 0.
    p: ``2`` or ``inf``.
    grad_bound: ``K_p``, a bound on ``||grad_z l||_2`` (p = 2) or
      ``||grad_z l||_inf`` (p = inf); ``None`` takes the softmax
      cross-entropy constants.
    reduction: ``"mean"`` or ``"none"``.
  """
  checks.check_eps(eps)
  p = checks.canonical_p(p)
  bound = CE_GRAD_BOUND[p] if grad_bound is None else grad_bound
  checks.check_eps(bound, "grad_bound")
  norm = "frobenius" if p == 2.0 else "l11"
  values = jacobian_penalty_per_example(
    apply_fn,
    params,
    x,
    key=key,
    norm=norm,
    estimator=estimator,
    num_projections=num_projections,
    per_example=per_example,
  )
  if norm == "frobenius":
    values = jnp.sqrt(values)
  losses = loss_fn(apply_fn(params, x), y)
  return _reduce(losses + eps * bound * values, reduction)
