"""`jacobian_penalty`: one call for every Jacobian norm and estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxjac._src import checks, estimators
from jaxjac._src import jacobian as jac_lib
from jaxjac._src.jacobian import ESTIMATORS, EXACT_METHODS, JACOBIAN_NORMS, ApplyFn, Params

REDUCTIONS = ("mean", "sum", "none")
_FD_NAMES = ("fd_step", "fd_central")
# The estimators of `jacobian_penalty`: those of `jaxjac.ESTIMATORS` and the finite difference.
PENALTY_ESTIMATORS = tuple(ESTIMATORS) + tuple(e for e in ("fd",) if e not in ESTIMATORS)

# (norm, estimator) -> estimator function of (f, x, **kwargs) -> (B,).
_RANDOM = {
  ("frobenius", "projection"): estimators.frobenius_projection,
  ("frobenius", "jvp"): estimators.frobenius_jvp,
  ("l11", "projection"): estimators.l11_projection,
  ("l11", "jvp"): estimators.l11_jvp,
}
_EXACT = {"frobenius": jac_lib.frobenius_exact, "l11": jac_lib.l11_exact}


def reduce(values: jax.Array, reduction: str) -> jax.Array:
  """``values`` ``(B,)`` reduced by ``"mean"``, ``"sum"`` or ``"none"`` (unchanged)."""
  checks.check_choice(reduction, "reduction", REDUCTIONS)
  if reduction == "mean":
    return jnp.mean(values)
  return jnp.sum(values) if reduction == "sum" else values


def _check_args(
  apply_fn, params, x, key, norm, estimator, method, reduction, num_projections, check_finite
):
  """The checks shared by :func:`jacobian_penalty` and :func:`penalty_and_logits`."""
  checks.check_choice(norm, "norm", JACOBIAN_NORMS)
  checks.check_choice(estimator, "estimator", PENALTY_ESTIMATORS)
  checks.check_choice(method, "method", EXACT_METHODS)
  checks.check_choice(reduction, "reduction", REDUCTIONS)
  checks.check_positive_int(num_projections, "num_projections")
  if estimator == "fd" and norm != "frobenius":
    raise ValueError(
      f"`estimator` 'fd' (finite difference) estimates norm='frobenius' only, got "
      f"norm={norm!r}; use estimator='projection' or 'exact' for it."
    )
  f = jac_lib.batch_fn(apply_fn, params)
  checks.check_float_array(x, "x")
  checks.check_nonempty_batch(x, "x")
  checks.check_finite(x, "x", checked=check_finite)
  checks.batch_output_shape(f, x, fn_name="apply_fn")  # Trace-time only.
  if key is not None:
    checks.validate_key(key)
  return f


def jacobian_penalty(
  apply_fn: ApplyFn,
  params: Params,
  x: ArrayLike,
  *,
  key: jax.Array | None = None,
  norm: str = "frobenius",
  estimator: str = "exact",
  num_projections: int = 1,
  method: str = "auto",
  iterations: int = 20,
  reduction: str = "mean",
  mixes_batch: bool = False,
  check_finite: bool = False,
  fd_step: float = estimators.FD_STEP,
  fd_central: bool = False,
) -> jax.Array:
  """A norm of the input-output Jacobian per example, reduced over the batch: the JR penalty.

  With ``z = apply_fn(params, x)`` and ``J_b = dz_b/dx_b`` (a ``C x d`` matrix,
  output and input dims after the batch flattened),

  .. math::
    R(x) = \\frac{1}{B} \\sum_{b=1}^{B} N(J_b), \\qquad
    N(J) \\in \\{\\|J\\|_F^2,\\ \\|J\\|_{1,1} = \\textstyle\\sum_{ij} |J_{ij}|,\\
    \\sigma_{\\max}(J)^2\\}

  for ``reduction="mean"`` (``"sum"``: without the ``1/B``; ``"none"``: the
  ``B`` values ``N(J_b)``). Hoffman et al. train on
  ``mean_b l(z_b, y_b) + (lambda_JR / 2) * R(x)`` with the Frobenius norm; Wu
  and Li use the Frobenius norm against l2 attacks and ``||J||_{1,1}`` against
  l_inf attacks.

  Estimators (all differentiable in ``params``, jit- and vmap-compatible):

  ==============  ===============================================  ==================
  estimator       frobenius / l11                                  cost per example
  ==============  ===============================================  ==================
  ``exact``       the dense Jacobian by ``method`` (default:       ``C`` VJPs
                  reverse mode, ``C`` one-hot VJPs, when C <= d)
  ``projection``  ``C/n sum_i ||v_i^T J||^2``, ``v`` uniform on    ``n`` VJPs
                  the sphere (Hoffman et al.); l11: one-hot rows,
                  ``C/n sum_i ||e_c^T J||_1``
  ``jvp``         ``1/n sum_i ||J u_i||^2``, ``u ~ N(0, I_d)``;    ``n`` JVPs
                  l11: one-hot columns, ``d/n sum ||J e_j||_1``
  ``fd``          frobenius only: ``jvp`` with ``J u`` replaced    ``n`` forward
                  by ``(f(x + h u) - f(x)) / h`` (bias ``O(h)``,   passes
                  ``O(h^2)`` with ``fd_central``)
  ==============  ===============================================  ==================

  The random estimators are unbiased and require ``key``; the ``n``
  projections are vmapped over ``jax.random.split(key, n)`` and share one
  forward pass. For the Frobenius norm the ``jvp`` estimator's variance is
  never smaller than the projection's, for any ``J``: per sample
  ``2 sum_k sigma_k^4`` against ``2 (C sum_k sigma_k^4 - (sum_k sigma_k^2)^2)
  / (C + 2)`` (derived in ``jaxjac._src.estimators``); it saves memory
  (forward mode), not variance. ``norm="spectral"`` uses power iteration
  (``iterations`` JVP+VJP pairs; ``key`` only draws the start) with
  ``estimator="exact"``.

  Flax: ``jacobian_penalty(model.apply, {"params": params}, x)``. A model
  with state (BatchNorm in training mode) needs a function returning only the
  logits, ``lambda v, x: model.apply(v, x, train=True,
  mutable=["batch_stats"])[0]``, and ``mixes_batch=True``, since it mixes
  examples. NNX: ``graphdef, state = nnx.split(model)`` and
  ``apply_fn = lambda s, x: nnx.merge(graphdef, s)(x)`` with ``params=state``.
  Mixed precision: wrap ``apply_fn`` with
  :func:`jaxjac.precision.mixed_precision`; a low-precision ``x`` with a
  float32 model also works (cotangents are built in the logits' dtype).

  Non-finite inputs: a concrete ``x`` holding a NaN or an infinity is
  rejected with a ``ValueError``. Inside ``jax.jit`` the values of ``x`` are
  not known at trace time; pass ``check_finite=True`` and wrap the caller in
  ``jax.experimental.checkify.checkify`` to check them at run time::

    checked = checkify.checkify(jax.jit(
        lambda p, x: jaxjac.jacobian_penalty(apply_fn, p, x, check_finite=True)))
    err, value = checked(params, x)
    err.throw()  # raises JaxRuntimeError naming `x` if it is not finite

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, ...)``.
    params: pytree, first argument of ``apply_fn``; the penalty is
      differentiable with respect to it.
    x: float inputs ``(B, ...)``, ``B >= 1``, finite.
    key: PRNG key (``jax.random.key(seed)``), required by the random
      estimators.
    norm: ``"frobenius"`` (squared), ``"l11"`` or ``"spectral"`` (squared);
      see ``jaxjac.JACOBIAN_NORMS``.
    estimator: ``"exact"``, ``"projection"``, ``"jvp"`` or ``"fd"`` (finite
      difference, :func:`jaxjac.frobenius_fd`; ``norm="frobenius"`` only).
    num_projections: samples per example for the random estimators, >= 1.
    method: how ``estimator="exact"`` builds the Jacobian; see
      :func:`jaxjac.jacobian`.
    iterations: power-iteration steps for ``norm="spectral"``.
    reduction: ``"mean"`` (the default, a scalar), ``"sum"`` (a scalar) or
      ``"none"`` (the per-example values, shape ``(B,)``).
    mixes_batch: ``False`` (the model treats examples independently): one
      batched VJP/JVP, the reference code's trick. ``True`` (the model mixes
      examples, e.g. BatchNorm in training mode): the diagonal blocks of the
      batched Jacobian by ``vmap`` over examples, right for every model,
      ``O(B)`` times the cost.
    check_finite: also check a traced ``x`` for NaN and infinities with
      ``jax.experimental.checkify.check`` (the caller must then be wrapped in
      ``checkify.checkify``). A concrete ``x`` is always checked.
    fd_step: the step ``h`` > 0 of ``estimator="fd"`` (see
      :func:`jaxjac.frobenius_fd`).
    fd_central: the central difference for ``estimator="fd"``.

  Returns:
    The penalty reduced by ``reduction``: a scalar, or ``(B,)`` for ``"none"``.

  Raises:
    ValueError: unknown ``norm``/``estimator``/``method``/``reduction``, a
      random estimator without ``key``, a batch of keys, ``num_projections <
      1``, an empty batch, a concrete ``x`` that is not finite, or
      ``apply_fn`` output whose leading dim is not the batch size of ``x``.
    TypeError: non-float ``x``, an integer as ``key``, a non-callable
      ``apply_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> apply_fn = lambda w, x: x @ w  # J_b = w^T for every example
    >>> w = jnp.array([[1., 2.], [3., 4.], [5., 6.]])
    >>> x = jnp.ones((4, 3))
    >>> float(jaxjac.jacobian_penalty(apply_fn, w, x))  # sum of w**2
    91.0
    >>> jaxjac.jacobian_penalty(apply_fn, w, x, norm="l11", reduction="none").tolist()
    [21.0, 21.0, 21.0, 21.0]
    >>> est = jaxjac.jacobian_penalty(apply_fn, w, x, key=jax.random.key(0),
    ...                               estimator="projection", num_projections=4000)
    >>> bool(jnp.abs(est - 91.0) < 0.05 * 91.0)
    True

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
    Wu, Li. Adversarially robust generalization theory via Jacobian
    regularization. arXiv:2412.12449, 2024.
  """
  f = _check_args(
    apply_fn, params, x, key, norm, estimator, method, reduction, num_projections, check_finite
  )
  if estimator == "fd":
    key = checks.check_key(key, needed_by="estimator='fd'")
    values, _ = estimators._fd(
      f, x, key, num_projections, fd_step, fd_central, mixes_batch, _FD_NAMES
    )
  elif norm == "spectral":
    if estimator != "exact":
      raise ValueError(
        "`estimator` must be 'exact' for norm='spectral' (computed by power "
        f"iteration; set `iterations`), got {estimator!r}."
      )
    values = estimators.spectral_power(
      f, x, key=key, iterations=iterations, mixes_batch=mixes_batch
    )
  elif estimator == "exact":
    values = _EXACT[norm](f, x, mixes_batch=mixes_batch, method=method)
  else:
    key = checks.check_key(key, needed_by=f"estimator={estimator!r}")
    values = _RANDOM[(norm, estimator)](
      f, x, key=key, num_projections=num_projections, mixes_batch=mixes_batch
    )
  return reduce(values, reduction)


# (norm, estimator) -> the estimator's spec, for the shared forward pass.
_SPECS = {
  ("frobenius", "projection"): estimators._FROBENIUS_PROJECTION,
  ("frobenius", "jvp"): estimators._FROBENIUS_JVP,
  ("l11", "projection"): estimators._L11_PROJECTION,
  ("l11", "jvp"): estimators._L11_JVP,
}


def penalty_and_logits(
  apply_fn: ApplyFn,
  params: Params,
  x: ArrayLike,
  *,
  key: jax.Array | None = None,
  norm: str = "frobenius",
  estimator: str = "projection",
  num_projections: int = 1,
  method: str = "auto",
  iterations: int = 20,
  reduction: str = "mean",
  mixes_batch: bool = False,
  check_finite: bool = False,
  fd_step: float = estimators.FD_STEP,
  fd_central: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """The JR penalty of :func:`jacobian_penalty` and the logits, from one forward pass.

  Returns ``(R(x), z)`` with ``z = apply_fn(params, x)`` and ``R`` the penalty
  :func:`jacobian_penalty` returns for the same arguments (the same value for
  the same ``key``; for ``"jvp"`` up to float rounding). A training loss

  .. math::
    L(\\theta) = \\frac{1}{B} \\sum_b \\ell(z_b, y_b) + \\frac{\\lambda_{JR}}{2} R(x)

  then takes ``z`` from here instead of a second call of ``apply_fn``: the
  cross-entropy and the penalty share one forward pass of the batch, and
  under ``jax.grad`` one backward pass through it.

  How the logits are shared (``mixes_batch=False``):

  * ``"projection"``: ``z, pull = jax.vjp(f, x)``; ``z`` is the primal
    output of the VJP whose cotangent pass gives ``v^T J``.
  * ``"jvp"``: ``z, J u = jax.jvp(f, (x,), (u,))`` (``jax.linearize`` for
    several directions).
  * ``"fd"``: ``z = f(x)`` is the clean pass of the difference quotient
    ``(f(x + h u) - z) / h``.

  Other estimators (``"exact"``, ``norm="spectral"``) and
  ``mixes_batch=True`` compute the penalty as :func:`jacobian_penalty` does
  and the logits by one more batched pass (same values, nothing shared).

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, ...)``.
    params: pytree, first argument of ``apply_fn``; both outputs are
      differentiable with respect to it.
    x: float inputs ``(B, ...)``, ``B >= 1``, finite.
    key: PRNG key, required by the random estimators.
    norm: ``"frobenius"``, ``"l11"`` or ``"spectral"``.
    estimator: ``"projection"`` (the default), ``"jvp"``, ``"fd"`` or
      ``"exact"``.
    num_projections: samples per example of the random estimators, >= 1.
    method: how ``estimator="exact"`` builds the Jacobian.
    iterations: power-iteration steps for ``norm="spectral"``.
    reduction: ``"mean"``, ``"sum"`` or ``"none"`` for the penalty.
    mixes_batch: see :func:`jacobian_penalty`.
    check_finite: see :func:`jacobian_penalty`.
    fd_step: the step ``h`` of ``estimator="fd"``.
    fd_central: the central difference for ``estimator="fd"``.

  Returns:
    ``(penalty, logits)``: the penalty reduced by ``reduction`` and the
    logits ``apply_fn(params, x)``.

  Raises:
    ValueError, TypeError: as :func:`jacobian_penalty`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> apply_fn = lambda w, x: x @ w
    >>> w = jnp.array([[1., 2.], [3., 4.], [5., 6.]])
    >>> x = jnp.ones((4, 3))
    >>> key = jax.random.key(0)
    >>> pen, logits = jaxjac.penalty_and_logits(apply_fn, w, x, key=key)
    >>> bool(pen == jaxjac.jacobian_penalty(apply_fn, w, x, key=key, estimator="projection"))
    True
    >>> logits.tolist()[0]
    [9.0, 12.0]

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
    Finlay, Oberman. Scaleable input gradient regularization for adversarial
    robustness. arXiv:1905.11468, 2019.
  """
  f = _check_args(
    apply_fn, params, x, key, norm, estimator, method, reduction, num_projections, check_finite
  )
  if estimator == "fd":
    key = checks.check_key(key, needed_by="estimator='fd'")
    values, logits = estimators._fd(
      f, x, key, num_projections, fd_step, fd_central, mixes_batch, _FD_NAMES
    )
  elif norm != "spectral" and estimator in ("projection", "jvp"):
    key = checks.check_key(key, needed_by=f"estimator={estimator!r}")
    spec = _SPECS[(norm, estimator)]
    values, logits = estimators._estimate_with_logits(f, x, key, num_projections, mixes_batch, spec)
  else:
    values = jacobian_penalty(
      apply_fn,
      params,
      x,
      key=key,
      norm=norm,
      estimator=estimator,
      num_projections=num_projections,
      method=method,
      iterations=iterations,
      reduction="none",
      mixes_batch=mixes_batch,
    )
    logits = f(jnp.asarray(x))
  return reduce(values, reduction), logits
