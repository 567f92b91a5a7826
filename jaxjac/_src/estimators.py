"""Random estimators of Jacobian norms: projections, JVPs and power iteration.

Each estimator takes a batched function ``f: x -> logits`` and returns the
per-example values, shape ``(B,)``. The four unbiased estimators share one
helper, :func:`_estimate`: draw ``n`` random directions per example (in output
space for a VJP, in input space for a JVP), push them through ``J_b`` and
average a scaled norm of the products:

.. math::
  \\hat N(J_b) = \\frac{s}{n} \\sum_{i=1}^{n} \\rho(w_{i,b}), \\qquad
  w_{i,b} = v_{i,b}^\\top J_b \\ \\text{(VJP)} \\ \\text{or} \\ J_b u_{i,b}
  \\ \\text{(JVP)},

with ``rho`` the squared l2 norm (Frobenius) or the l1 norm (l_{1,1}) and
``s`` the scale that makes the estimate unbiased.

**Projection against JVP (Frobenius).** Both are unbiased for
``||J||_F^2``; with ``sigma_k`` the singular values of ``J`` (``r = min(C, d)``
of them), one sample has variance

.. math::
  \\mathrm{Var}_{\\mathrm{proj}} = \\frac{2}{C + 2}
  \\Big(C \\sum_k \\sigma_k^4 - \\big(\\textstyle\\sum_k \\sigma_k^2\\big)^2\\Big),
  \\qquad
  \\mathrm{Var}_{\\mathrm{jvp}} = 2 \\sum_k \\sigma_k^4 .

For the projection ``v`` is uniform on the sphere ``S^{C-1}`` and
``C ||v^T J||^2 = C v^T (J J^T) v``; for the JVP ``u ~ N(0, I_d)`` and
``||J u||^2 = u^T (J^T J) u`` (a Gaussian quadratic form). Since
``(sum_k sigma_k^2)^2 >= sum_k sigma_k^4``,
``Var_proj <= 2 (C - 1) sum_k sigma_k^4 / (C + 2) < Var_jvp`` for every ``J``
and every ``C``, ``d``: the JVP estimator's variance is never smaller than the
projection's (equal only when ``J = 0``). Its merit is forward mode (no
stored activations), not precision.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
  Wu, Li. Adversarially robust generalization theory via Jacobian
  regularization. arXiv:2412.12449, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxjac._src import checks
from jaxjac._src.jacobian import BatchFn, _make_ops

# draw(key, batch, size, dtype) -> (batch, size) directions.
Draw = Callable[[jax.Array, int, int, object], jax.Array]


def _sphere(key: jax.Array, batch: int, size: int, dtype) -> jax.Array:
  """Uniform on the unit sphere ``S^{size-1}``, one direction per example."""
  g = jax.random.normal(key, (batch, size), dtype)
  return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def _gaussian(key: jax.Array, batch: int, size: int, dtype) -> jax.Array:
  return jax.random.normal(key, (batch, size), dtype)


def _one_hot(key: jax.Array, batch: int, size: int, dtype) -> jax.Array:
  """A uniformly drawn basis vector ``e_k`` per example."""
  return jax.nn.one_hot(jax.random.randint(key, (batch,), 0, size), size, dtype=dtype)


class _Spec(NamedTuple):
  """One estimator: ``mode`` ("vjp" or "jvp"), its directions, ``rho`` and scaling."""

  mode: str
  draw: Draw
  rho: Callable[[jax.Array], jax.Array]
  scaled: bool


_FROBENIUS_PROJECTION = _Spec("vjp", _sphere, jnp.square, scaled=True)
_FROBENIUS_JVP = _Spec("jvp", _gaussian, jnp.square, scaled=False)
_L11_PROJECTION = _Spec("vjp", _one_hot, jnp.abs, scaled=True)
_L11_JVP = _Spec("jvp", _one_hot, jnp.abs, scaled=True)


def _estimate(
  f: BatchFn, x: ArrayLike, key: jax.Array, num_projections: int, mixes_batch: bool, spec: _Spec
) -> jax.Array:
  """``(s / n) sum_i sum_j rho(w_i)_j`` per example, ``s`` = the direction's dim if scaled.

  ``mode="vjp"``: ``w_i = v_i^T J`` for ``v_i`` drawn in output space (logits'
  dtype); ``mode="jvp"``: ``w_i = J u_i`` for ``u_i`` drawn in input space
  (``x``'s dtype). The ``n`` directions are vmapped over
  ``jax.random.split(key, n)`` and share one forward pass.
  """
  mode, draw, rho, scaled = spec
  checks.check_key(key, needed_by=f"the {mode} estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, mixes_batch, fn_name="f")
  batch, dim = ops.xf.shape
  if mode == "vjp":
    size, dtype, push = ops.num_outputs, ops.out_dtype, ops.vjp_many
  else:
    size, dtype, push = dim, ops.xf.dtype, ops.jvp_many
  # Drawn in the accumulation dtype, then rounded: a low-precision x gets the same directions.
  draw_one = lambda k: draw(k, batch, size, ops.acc_dtype).astype(dtype)
  directions = jax.vmap(draw_one)(jax.random.split(key, n))
  w = push(directions).astype(ops.acc_dtype)  # (n, B, C or d)
  scale = size if scaled else 1
  return scale * jnp.mean(jnp.sum(rho(w), axis=-1), axis=0)


def frobenius_projection(
  f: BatchFn, x: ArrayLike, *, key: jax.Array, num_projections: int = 1, mixes_batch: bool = False
) -> jax.Array:
  """Random-projection estimate of ``||J_b||_F^2`` (Hoffman et al. 2019, eq. 9).

  .. math::
    \\|J\\|_F^2 = C \\, \\mathbb{E}_{v \\sim U(S^{C-1})} \\|v^\\top J\\|_2^2
    \\approx \\frac{C}{n} \\sum_{i=1}^{n} \\|v_i^\\top J\\|_2^2 .

  Unbiased; variance falls as ``1/num_projections`` and is never larger than
  that of :func:`frobenius_jvp` (module docstring). Each projection is one
  reverse-mode VJP; the ``n`` projections share one forward pass (vmapped
  cotangents), and every example draws its own ``v``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jax.random.normal(jax.random.key(0), (5, 3))
    >>> x = jnp.ones((2, 5))
    >>> est = jaxjac.frobenius_projection(lambda x: x @ w, x, key=jax.random.key(1),
    ...                                   num_projections=4000)
    >>> bool(jnp.allclose(est, jnp.sum(w**2), rtol=0.05))
    True
  """
  return _estimate(f, x, key, num_projections, mixes_batch, _FROBENIUS_PROJECTION)


def frobenius_jvp(
  f: BatchFn, x: ArrayLike, *, key: jax.Array, num_projections: int = 1, mixes_batch: bool = False
) -> jax.Array:
  """Forward-mode Hutchinson estimate of ``||J_b||_F^2`` in input space.

  .. math::
    \\|J\\|_F^2 = \\operatorname{tr}(J^\\top J)
    = \\mathbb{E}_{u \\sim N(0, I_d)} \\|J u\\|_2^2
    \\approx \\frac{1}{n} \\sum_{i=1}^{n} \\|J u_i\\|_2^2 .

  Unbiased; each sample is one JVP (forward mode, no stored activations).
  Its variance, ``2 sum_k sigma_k^4 / n``, is never smaller than that of
  :func:`frobenius_projection` for any ``J``, ``C`` and ``d`` (the formulas
  are compared in the module docstring).

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., 0.], [0., 1.], [1., 1.]])  # ||J||_F^2 = 4
    >>> est = jaxjac.frobenius_jvp(lambda x: x @ w, jnp.ones((2, 3)), key=jax.random.key(0),
    ...                            num_projections=4000)
    >>> bool(jnp.allclose(est, 4.0, rtol=0.1))
    True
  """
  return _estimate(f, x, key, num_projections, mixes_batch, _FROBENIUS_JVP)


def l11_projection(
  f: BatchFn, x: ArrayLike, *, key: jax.Array, num_projections: int = 1, mixes_batch: bool = False
) -> jax.Array:
  """Row-sampling estimate of ``||J_b||_{1,1}``: one VJP per sample.

  .. math::
    \\|J\\|_{1,1} = \\sum_c \\|e_c^\\top J\\|_1
    = C \\, \\mathbb{E}_{c \\sim U\\{1..C\\}} \\|e_c^\\top J\\|_1 .

  Unbiased: a uniformly drawn class ``c`` per example and projection (the
  l_{1,1} norm has no rotation-invariant projection identity, so the
  one-hot directions replace the sphere of the Frobenius estimator).

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., -1.], [2., 2.], [-3., 3.]])  # both rows of J: l1 norm 6
    >>> jaxjac.l11_projection(lambda x: x @ w, jnp.ones((2, 3)), key=jax.random.key(0)).tolist()
    [12.0, 12.0]
  """
  return _estimate(f, x, key, num_projections, mixes_batch, _L11_PROJECTION)


def l11_jvp(
  f: BatchFn, x: ArrayLike, *, key: jax.Array, num_projections: int = 1, mixes_batch: bool = False
) -> jax.Array:
  """Column-sampling estimate of ``||J_b||_{1,1}``: one JVP per sample.

  .. math::
    \\|J\\|_{1,1} = \\sum_j \\|J e_j\\|_1
    = d \\, \\mathbb{E}_{j \\sim U\\{1..d\\}} \\|J e_j\\|_1 .

  Unbiased, but with ``d`` input pixels its variance is large unless the
  Jacobian's columns have similar norms; prefer :func:`l11_projection`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., -1.], [2., 0.], [0., -2.]])  # every column of J: l1 norm 2
    >>> jaxjac.l11_jvp(lambda x: x @ w, jnp.ones((2, 3)), key=jax.random.key(0)).tolist()
    [6.0, 6.0]
  """
  return _estimate(f, x, key, num_projections, mixes_batch, _L11_JVP)


def spectral_power(
  f: BatchFn,
  x: ArrayLike,
  *,
  key: jax.Array | None = None,
  iterations: int = 20,
  mixes_batch: bool = False,
) -> jax.Array:
  """Squared largest singular value ``sigma_max(J_b)^2`` by power iteration.

  .. math::
    u_{t+1} = \\frac{J^\\top J u_t}{\\|J^\\top J u_t\\|_2}, \\qquad
    \\sigma_{\\max}(J)^2 \\approx \\|J u_T\\|_2^2 .

  Alternates a JVP and a VJP for ``iterations`` steps from a Gaussian start
  (drawn from ``key``, or from a fixed key when ``key`` is None, so the result
  is deterministic), then returns ``||J u||^2`` with ``u`` held constant. By
  the envelope theorem its gradient with respect to the parameters is that of
  ``sigma_max^2`` once ``u`` has converged (the spectral-norm regularizer of
  Yoshida and Miyato 2017, arXiv:1705.10941, on the input-output Jacobian).
  Convergence is geometric in ``(sigma_2 / sigma_1)^2``.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[3., 0.], [0., 1.], [0., 0.]])
    >>> jaxjac.spectral_power(lambda x: x @ w, jnp.ones((1, 3))).round(3).tolist()
    [9.0]
  """
  iterations = checks.check_positive_int(iterations, "iterations")
  if key is not None:
    checks.validate_key(key)
  ops = _make_ops(f, x, mixes_batch, fn_name="f")
  start_key = jax.random.key(0) if key is None else key
  u0 = jax.random.normal(start_key, ops.xf.shape, ops.acc_dtype).astype(ops.xf.dtype)

  def power(fn, xi, ui):
    _, push = jax.linearize(fn, xi)
    pull = jax.linear_transpose(push, xi)

    def normalize(w):
      norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
      return w / jnp.maximum(norm, jnp.finfo(w.dtype).tiny)

    step = lambda _, u: normalize(pull(push(u).astype(ops.out_dtype))[0])
    u = jax.lax.fori_loop(0, iterations, step, normalize(ui))
    return jax.lax.stop_gradient(u)

  row_fn = ops.row_fn
  if row_fn is not None:  # mixes_batch: each example's diagonal block
    u = jax.vmap(lambda b, xi, ui: power(row_fn(b), xi, ui))(
      jnp.arange(ops.xf.shape[0]), ops.xf, u0
    )
  else:  # One batched pass per step; each row is normalized on its own.
    u = power(ops.g, ops.xf, u0)
  y = ops.jvp_many(u[None])[0].astype(ops.acc_dtype)
  return jnp.sum(jnp.square(y), axis=-1)


# --------------------------------------------------------------------------- shared forward pass


def _directions(ops, key: jax.Array, n: int, spec: _Spec) -> tuple[jax.Array, int]:
  """The ``(n, B, size)`` directions of :func:`_estimate`, drawn by the same recipe."""
  batch, dim = ops.xf.shape
  if spec.mode == "vjp":
    size, dtype = ops.num_outputs, ops.out_dtype
  else:
    size, dtype = dim, ops.xf.dtype
  draw_one = lambda k: spec.draw(k, batch, size, ops.acc_dtype).astype(dtype)
  return jax.vmap(draw_one)(jax.random.split(key, n)), size


def _estimate_with_logits(
  f: BatchFn, x: ArrayLike, key: jax.Array, num_projections: int, mixes_batch: bool, spec: _Spec
) -> tuple[jax.Array, jax.Array]:
  """:func:`_estimate` and the logits ``f(x)`` from the same forward pass.

  With ``mixes_batch=False`` the logits are the primal output of the one
  ``jax.vjp`` (or ``jax.jvp``) whose cotangent (tangent) pass gives
  the products, so a loss on the logits and the penalty share the forward
  pass; the values equal :func:`_estimate`'s for the same key (same
  directions, same products; the JVP's up to rounding). With
  ``mixes_batch=True`` the products need per-example passes, and the logits
  come from one extra batched pass.
  """
  mode, _, rho, scaled = spec
  checks.check_key(key, needed_by=f"the {mode} estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, mixes_batch, fn_name="f")
  out_shape = (ops.xf.shape[0],) + tuple(jax.eval_shape(f, jnp.asarray(x)).shape[1:])
  if ops.row_fn is not None:
    values = _estimate(f, x, key, n, mixes_batch, spec)
    return values, ops.g(ops.xf).reshape(out_shape)
  directions, size = _directions(ops, key, n, spec)
  # One direction: no vmap (a size-1 vmapped axis cost LeNet' 0.3x of a plain step and 20% more
  # memory in bench_floor.py); one jax.jvp gives the logits and J u.
  if mode == "vjp":
    logits, pull = jax.vjp(ops.g, ops.xf)
    if n == 1:
      w = pull(directions[0])[0][None]
    else:
      w = jax.vmap(lambda v: pull(v)[0])(directions)
  elif n == 1:
    logits, w = jax.jvp(ops.g, (ops.xf,), (directions[0],))
    w = w[None]
  else:
    logits, push = jax.linearize(ops.g, ops.xf)
    w = jax.vmap(push)(directions)
  w = w.astype(ops.acc_dtype)
  scale = size if scaled else 1
  values = scale * jnp.mean(jnp.sum(rho(w), axis=-1), axis=0)
  return values, logits.reshape(out_shape)


# --------------------------------------------------------------------------- finite differences

FD_STEP = 1e-3


def check_step(step: object, name: str = "step") -> float:
  """Returns ``step`` as a float if it is a finite Python/NumPy number > 0, else raises."""
  if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
    raise TypeError(
      f"`{name}` must be a Python float > 0 (the finite-difference step), got {step!r}."
    )
  value = float(step)
  if not math.isfinite(value) or value <= 0:
    raise ValueError(
      f"`{name}` must be a finite float > 0 (the finite-difference step), got {step!r}."
    )
  return value


def _fd(
  f: BatchFn,
  x: ArrayLike,
  key: jax.Array,
  num_projections: int,
  step: float,
  central: bool,
  mixes_batch: bool,
  names: tuple[str, str] = ("step", "central"),
) -> tuple[jax.Array, jax.Array]:
  """``(values (B,), logits)`` of :func:`frobenius_fd`; the logits are the clean pass."""
  checks.check_key(key, needed_by="the finite-difference estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  h = check_step(step, names[0])
  if not isinstance(central, bool):
    raise TypeError(f"`{names[1]}` must be a bool, got {central!r}.")
  ops = _make_ops(f, x, mixes_batch, fn_name="f")
  batch = ops.xf.shape[0]
  out_shape = (batch,) + tuple(jax.eval_shape(f, jnp.asarray(x)).shape[1:])
  u, _ = _directions(ops, key, n, _FROBENIUS_JVP)  # (n, B, d), N(0, I_d), x's dtype
  hu = (h * u.astype(ops.acc_dtype)).astype(ops.xf.dtype)
  z0 = ops.g(ops.xf)
  if ops.row_fn is None:  # each perturbed batch is one batched pass (vmapped over n)
    shifted = jax.vmap(ops.g)
  else:  # the diagonal blocks: example b moved, the rest of the batch fixed

    def shifted(xs):  # (n, B, d) -> (n, B, C)
      rows = lambda b, xb: jax.vmap(ops.row_fn(b))(xb)  # xb: (n, d)
      return jnp.swapaxes(jax.vmap(rows)(jnp.arange(batch), jnp.swapaxes(xs, 0, 1)), 0, 1)

  xs = jnp.broadcast_to(ops.xf[None], hu.shape)
  if central:
    diff = (shifted(xs + hu).astype(ops.acc_dtype) - shifted(xs - hu).astype(ops.acc_dtype)) / (
      2 * h
    )
  else:
    diff = (shifted(xs + hu).astype(ops.acc_dtype) - z0.astype(ops.acc_dtype)[None]) / h
  values = jnp.mean(jnp.sum(jnp.square(diff), axis=-1), axis=0)
  return values, z0.reshape(out_shape)


def frobenius_fd(
  f: BatchFn,
  x: ArrayLike,
  *,
  key: jax.Array,
  num_projections: int = 1,
  step: float = FD_STEP,
  central: bool = False,
  mixes_batch: bool = False,
) -> jax.Array:
  """Finite-difference estimate of ``||J_b||_F^2``: forward passes only.

  The Hutchinson estimator of :func:`frobenius_jvp` with the JVP replaced by a
  difference quotient along the same Gaussian direction (Finlay and Oberman
  2019 regularize such quotients of the loss):

  .. math::
    \\|J\\|_F^2 = \\mathbb{E}_{u \\sim N(0, I_d)} \\|J u\\|_2^2, \\qquad
    J u \\approx \\frac{f(x + h u) - f(x)}{h}
    \\ \\text{(one-sided)}, \\quad
    \\frac{f(x + h u) - f(x - h u)}{2 h} \\ \\text{(central)}.

  ``u`` is drawn exactly as :func:`frobenius_jvp` draws it from ``key``, so
  the two agree as ``h -> 0``. Bias: for a twice-differentiable ``f`` the
  one-sided quotient is ``J u + (h / 2) u^T H u + O(h^2)`` (bias ``O(h)``),
  the central one ``O(h^2)``; it costs one more forward pass. For a
  ReLU/max-pool network ``f`` is piecewise linear, the quotient is exact
  unless the segment ``[x, x + h u]`` crosses an activation boundary (an
  ``O(h)`` probability), and at a point on a boundary (a ReLU input exactly
  0, a tied max) it is the one-sided directional derivative, not the
  derivative JAX assigns there. Rounding adds about ``eps |f(x)| / h`` per
  output (``eps`` of the logits' dtype): ``h = 1e-3`` balances the two in
  float32 for inputs in ``[0, 1]`` (measured in ``tests/test_estimators.py``).

  The clean pass ``f(x)`` is the one a loss can share
  (:func:`jaxjac.penalty_and_logits`); each direction adds one forward pass
  of the batch (``mixes_batch=True``: ``B`` of them, one per moved example),
  and the gradient with respect to the parameters is an ordinary backward
  pass through each: no second-order differentiation.

  Args:
    f: the batched function ``x -> logits``.
    x: float inputs ``(B, ...)``.
    key: PRNG key for the directions.
    num_projections: directions per example, >= 1.
    step: the step ``h`` > 0, in units of ``u`` (whose entries have variance 1).
    central: the central difference (``O(h^2)`` bias, one more pass per direction).
    mixes_batch: see :func:`jaxjac.jacobian_penalty`.

  Returns:
    ``(B,)`` estimates in the wider of the dtypes of ``x`` and the logits.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., 0.], [0., 1.], [1., 1.]])  # linear: the quotient is exact
    >>> x = jnp.ones((2, 3))
    >>> fd = jaxjac.frobenius_fd(lambda x: x @ w, x, key=jax.random.key(0), num_projections=8)
    >>> jvp = jaxjac.frobenius_jvp(lambda x: x @ w, x, key=jax.random.key(0), num_projections=8)
    >>> bool(jnp.allclose(fd, jvp, rtol=1e-3))
    True

  References:
    Finlay, Oberman. Scaleable input gradient regularization for adversarial
    robustness. arXiv:1905.11468, 2019.
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
  """
  values, _ = _fd(f, x, key, num_projections, step, central, mixes_batch)
  return values
