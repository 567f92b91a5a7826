"""`jacobian_penalty`: one call for every Jacobian norm and estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxjac._src import checks
from jaxjac._src import jacobian as jac_lib
from jaxjac._src.jacobian import ESTIMATORS, EXACT_METHODS, NORMS, ApplyFn, Params

# (norm, estimator) -> estimator function of (f, x, **kwargs) -> (B,).
_RANDOM = {
  ("frobenius", "projection"): jac_lib.frobenius_projection,
  ("frobenius", "jvp"): jac_lib.frobenius_jvp,
  ("l11", "projection"): jac_lib.l11_projection,
  ("l11", "jvp"): jac_lib.l11_jvp,
}
_EXACT = {"frobenius": jac_lib.frobenius_exact, "l11": jac_lib.l11_exact}


def jacobian_penalty_per_example(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  *,
  key: jax.Array | None = None,
  norm: str = "frobenius",
  estimator: str = "exact",
  num_projections: int = 1,
  per_example: bool = False,
  method: str = "auto",
  iterations: int = 20,
) -> jax.Array:
  """Per-example Jacobian penalties, shape ``(B,)``; see :func:`jacobian_penalty`."""
  checks.check_choice(norm, "norm", NORMS)
  checks.check_choice(estimator, "estimator", ESTIMATORS)
  checks.check_choice(method, "method", EXACT_METHODS)
  checks.check_positive_int(num_projections, "num_projections")
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  f = lambda xb: apply_fn(params, xb)
  checks.check_float_array(x, "x")
  checks.batch_output_shape(f, x, fn_name="apply_fn")  # Trace-time only.
  if norm == "spectral":
    if estimator != "exact":
      raise ValueError(
        "`estimator` must be 'exact' for norm='spectral' (computed by power "
        f"iteration; set `iterations`), got {estimator!r}."
      )
    return jac_lib.spectral_power(f, x, key=key, iterations=iterations, per_example=per_example)
  if estimator == "exact":
    return _EXACT[norm](f, x, per_example=per_example, method=method)
  checks.check_key(key, needed_by=f"estimator={estimator!r}")
  return _RANDOM[(norm, estimator)](
    f, x, key=key, num_projections=num_projections, per_example=per_example
  )


def jacobian_penalty(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  *,
  key: jax.Array | None = None,
  norm: str = "frobenius",
  estimator: str = "exact",
  num_projections: int = 1,
  per_example: bool = False,
  method: str = "auto",
  iterations: int = 20,
) -> jax.Array:
  """Batch mean of a norm of the input-output Jacobian: the JR penalty.

  With ``z = apply_fn(params, x)`` and ``J_b = dz_b/dx_b`` (a ``C x d`` matrix,
  output and input dims after the batch flattened),

  .. math::
    R(x) = \\frac{1}{B} \\sum_{b=1}^{B} N(J_b), \\qquad
    N(J) \\in \\{\\|J\\|_F^2,\\ \\|J\\|_{1,1} = \\textstyle\\sum_{ij} |J_{ij}|,\\
    \\sigma_{\\max}(J)^2\\}.

  Hoffman et al. train on ``mean_b l(z_b, y_b) + (lambda_JR / 2) * R(x)`` with
  the Frobenius norm; Wu and Li use the Frobenius norm against l2 attacks and
  ``||J||_{1,1}`` against l_inf attacks.

  Estimators (all differentiable in ``params``, jit- and vmap-compatible):

  ============  ==========================================  ======================
  estimator     frobenius / l11                              cost per example
  ============  ==========================================  ======================
  ``exact``     dense Jacobian by ``method`` (default:       ``C`` VJPs
                reverse mode, C one-hot VJPs, when C <= d)
  ``projection``  ``C/n sum_i ||v_i^T J||^2``, v uniform on  ``n`` VJPs
                the sphere (Hoffman et al.); l11: one-hot
                rows, ``C/n sum_i ||e_c^T J||_1``
  ``jvp``       ``1/n sum_i ||J u_i||^2``, u ~ N(0, I_d);    ``n`` JVPs
                l11: one-hot columns, ``d/n sum ||J e_j||_1``
  ============  ==========================================  ======================

  The random estimators are unbiased and require ``key``; the ``n``
  projections are vmapped over ``jax.random.split(key, n)`` and share one
  forward pass. ``norm="spectral"`` uses power iteration (``iterations``
  JVP+VJP pairs; ``key`` only draws the start) with ``estimator="exact"``.

  Flax: ``jacobian_penalty(model.apply, {"params": params}, x)``. A model
  with state (BatchNorm in training mode) needs a function returning only the
  logits, ``lambda v, x: model.apply(v, x, train=True,
  mutable=["batch_stats"])[0]``, and ``per_example=True``, since it mixes
  examples. NNX: ``graphdef, state = nnx.split(model)`` and
  ``apply_fn = lambda s, x: nnx.merge(graphdef, s)(x)`` with ``params=state``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, ...)``.
    params: pytree, first argument of ``apply_fn``; the penalty is
      differentiable with respect to it.
    x: float inputs ``(B, ...)``.
    key: PRNG key, required by the random estimators.
    norm: ``"frobenius"`` (squared), ``"l11"`` or ``"spectral"`` (squared).
    estimator: ``"exact"``, ``"projection"`` or ``"jvp"``.
    num_projections: samples per example for the random estimators, >= 1.
    per_example: ``False``: one batched VJP/JVP (the reference code's trick,
      right when examples do not interact). ``True``: the diagonal blocks of
      the batched Jacobian by ``vmap`` over examples, right for every model
      (BatchNorm in training mode included), ``O(B)`` times the cost.
    method: how ``estimator="exact"`` builds the Jacobian; see
      :func:`jaxjac.jacobian`.
    iterations: power-iteration steps for ``norm="spectral"``.

  Returns:
    Scalar: the batch mean of the per-example penalty.

  Raises:
    ValueError: unknown ``norm``/``estimator``/``method``, a random estimator
      without ``key``, ``num_projections < 1``, or ``apply_fn`` output whose
      leading dim is not the batch size of ``x``.
    TypeError: non-float ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> apply_fn = lambda w, x: jnp.tanh(x @ w)
    >>> w = jax.random.normal(jax.random.key(0), (5, 3))
    >>> x = jax.random.normal(jax.random.key(1), (8, 5))
    >>> exact = jaxjac.jacobian_penalty(apply_fn, w, x)
    >>> est = jaxjac.jacobian_penalty(apply_fn, w, x, key=jax.random.key(2),
    ...                               estimator="projection", num_projections=4)
    >>> bool(jnp.isfinite(est)) and float(exact) > 0
    True

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
    Wu, Li. Adversarially robust generalization theory via Jacobian
    regularization. arXiv:2412.12449, 2024.
  """
  values = jacobian_penalty_per_example(
    apply_fn,
    params,
    x,
    key=key,
    norm=norm,
    estimator=estimator,
    num_projections=num_projections,
    per_example=per_example,
    method=method,
    iterations=iterations,
  )
  return jnp.mean(values)
