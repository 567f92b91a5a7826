"""Input-output Jacobians of classifiers: dense, exact norms and estimators.

A classifier ``f`` maps a batch ``x`` of shape ``(B, ...)`` to logits of shape
``(B, ...)``. Dims after the batch are flattened: ``d`` inputs, ``C`` outputs,
and ``J_b = dz_b / dx_b`` is a ``C x d`` matrix per example.

Two ways to get per-example products ``v_b^T J_b`` and ``J_b u_b``:

* **batched** (``per_example=False``, the default): one VJP (or JVP) of the
  batched logits with a per-example cotangent (tangent). Because row ``b`` of
  the output depends only on row ``b`` of the input, the result's row ``b`` is
  ``v_b^T J_b``. This is the trick of Hoffman et al.'s reference code: as cheap
  as one backward pass. It is **wrong for models that mix examples**
  (BatchNorm in training mode, attention across the batch): there it returns
  ``sum_b' v_b'^T dz_b'/dx_b``.
* **per-example** (``per_example=True``): for each ``b``, the Jacobian of
  ``z_b`` with respect to ``x_b`` with the rest of the batch held fixed, the
  diagonal block of the batched Jacobian, by ``vmap`` over examples. It is
  correct for every model, mixing or not, and costs ``B`` forward passes of
  the batch (``O(B^2)``), so use it only for models that mix the batch.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxjac._src import checks

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]
BatchFn = Callable[[jax.Array], jax.Array]

NORMS = ("frobenius", "l11", "spectral")
ESTIMATORS = ("exact", "projection", "jvp")
EXACT_METHODS = ("auto", "vjp", "loop", "scan", "jvp", "jacrev", "jacfwd")
# "auto" unrolls a loop over the classes (method="loop") up to this many outputs for
# convolutional models on CPU; see `_auto_method`.
LOOP_MAX_OUTPUTS = 16


class _Ops(NamedTuple):
  """Per-example linear maps of one batch, in flattened coordinates.

  Attributes:
    vjp_many: ``(n, B, C) -> (n, B, d)``, row ``b`` of slice ``i`` is
      ``V[i, b]^T J_b``.
    pullback: ``() -> (v -> v^T J)``, ``(B, C) -> (B, d)``: one forward pass
      whose VJP can be applied to several cotangents (separately traced).
    jvp_many: ``(n, B, d) -> (n, B, C)``, row ``b`` of slice ``i`` is
      ``J_b U[i, b]``.
    row_fn: ``b -> (x_b -> z_b)`` on flat vectors, for per-example transforms.
    g: the batched function on flat arrays, ``(B, d) -> (B, C)``.
    xf: the flattened input, ``(B, d)``.
    num_outputs: ``C``.
  """

  vjp_many: Callable[[jax.Array], jax.Array]
  pullback: Callable[[], Callable[[jax.Array], jax.Array]]
  jvp_many: Callable[[jax.Array], jax.Array]
  row_fn: Callable[[jax.Array], Callable[[jax.Array], jax.Array]]
  g: Callable[[jax.Array], jax.Array]
  xf: jax.Array
  num_outputs: int


def _make_ops(f: BatchFn, x: jax.Array, per_example: bool, *, fn_name="apply_fn") -> _Ops:
  checks.check_float_array(x, "x")
  out_shape = checks.batch_output_shape(f, x, fn_name=fn_name)
  batch = x.shape[0]
  num_outputs = math.prod(out_shape[1:])
  xf = x.reshape(batch, -1)

  def g(flat: jax.Array) -> jax.Array:  # (B, d) -> (B, C)
    return f(flat.reshape(x.shape)).reshape(batch, num_outputs)

  if per_example:

    def row_fn(b):
      return lambda xi: g(xf.at[b].set(xi))[b]

    def vjp_many(v):  # (n, B, C)
      def one(b, xi, vb):  # vb: (n, C)
        _, pull = jax.vjp(row_fn(b), xi)
        return jax.vmap(lambda c: pull(c)[0])(vb)

      out = jax.vmap(one)(jnp.arange(batch), xf, jnp.swapaxes(v, 0, 1))
      return jnp.swapaxes(out, 0, 1)

    def jvp_many(u):  # (n, B, d)
      def one(b, xi, ub):
        return jax.vmap(lambda t: jax.jvp(row_fn(b), (xi,), (t,))[1])(ub)

      out = jax.vmap(one)(jnp.arange(batch), xf, jnp.swapaxes(u, 0, 1))
      return jnp.swapaxes(out, 0, 1)

    def pullback():  # per example, each cotangent needs its own vmapped forward passes
      return lambda v: vjp_many(v[None])[0]

  else:

    def row_fn(b):
      del b
      return lambda xi: g_single(xi)

    def g_single(xi):  # one example on its own: a batch of one
      return f(xi.reshape((1,) + x.shape[1:])).reshape(num_outputs)

    def vjp_many(v):
      _, pull = jax.vjp(g, xf)
      return jax.vmap(lambda c: pull(c)[0])(v)

    def jvp_many(u):
      return jax.vmap(lambda t: jax.jvp(g, (xf,), (t,))[1])(u)

    def pullback():
      _, pull = jax.vjp(g, xf)
      return lambda v: pull(v)[0]

  return _Ops(vjp_many, pullback, jvp_many, row_fn, g, xf, num_outputs)


def _auto_method(ops: _Ops) -> str:
  """``"jvp"`` when ``C > d``; else ``"loop"`` for small ``C`` on CPU when the model
  convolves, else ``"vjp"``.

  Measured for the training step of the exact Frobenius penalty at batch 128 on a
  2-core CPU (``benchmarks/bench_jr.py``): for LeNet' (convolutions) the unrolled
  loop over the 10 classes took 10.4x the plain step and 290 MB against 16.8x and
  663 MB for the vmapped VJP (XLA:CPU runs the 10x larger batched convolutions
  badly); for an MLP the vmapped VJP is faster (9.7x against 15.6x) and smaller.
  """
  dim = ops.xf.shape[1]
  if ops.num_outputs > dim:
    return "jvp"
  if ops.num_outputs <= LOOP_MAX_OUTPUTS and jax.default_backend() == "cpu":
    jaxpr = jax.make_jaxpr(ops.g)(jax.ShapeDtypeStruct(ops.xf.shape, ops.xf.dtype))
    if "conv_general_dilated" in str(jaxpr):
      return "loop"
  return "vjp"


def _dense(ops: _Ops, method: str) -> jax.Array:
  """Per-example Jacobians ``(B, C, d)`` by the given exact method."""
  batch, dim = ops.xf.shape
  num_outputs = ops.num_outputs
  dtype = ops.xf.dtype
  if method == "auto":
    method = _auto_method(ops)
  eye = jnp.eye(num_outputs, dtype=dtype)
  if method == "vjp":  # C reverse passes, vmapped over one-hot cotangents.
    cot = jnp.broadcast_to(eye[:, None], (num_outputs, batch, num_outputs))
    return jnp.moveaxis(ops.vjp_many(cot), 0, 1)
  if method == "loop":  # C reverse passes unrolled, sharing one forward pass.
    pull = ops.pullback()
    return jnp.stack([pull(jnp.broadcast_to(e, (batch, num_outputs))) for e in eye], axis=1)
  if method == "scan":  # C reverse passes in a loop, each rematerialized: least memory.
    pull = ops.pullback()
    one_class = jax.checkpoint(lambda e: pull(jnp.broadcast_to(e, (batch, num_outputs))))
    return jnp.moveaxis(jax.lax.map(one_class, eye), 0, 1)
  if method == "jvp":  # d forward passes, vmapped over one-hot tangents.
    tan = jnp.broadcast_to(jnp.eye(dim, dtype=dtype)[:, None], (dim, batch, dim))
    return jnp.moveaxis(ops.jvp_many(tan), 0, 2)
  if method in ("jacrev", "jacfwd"):
    transform = jax.jacrev if method == "jacrev" else jax.jacfwd
    return jax.vmap(lambda b, xi: transform(ops.row_fn(b))(xi))(jnp.arange(batch), ops.xf)
  raise ValueError(f"`method` must be one of {EXACT_METHODS}, got {method!r}.")


def _exact_sum(f: BatchFn, x: jax.Array, per_example: bool, method: str, elementwise) -> jax.Array:
  """``sum_ij elementwise(J_b)_ij`` per example, shape ``(B,)``.

  With ``method="scan"`` the rows ``e_c^T J`` are reduced inside the loop, so
  the dense ``(B, C, d)`` Jacobian is never stored; otherwise it is built by
  :func:`_dense` and reduced.
  """
  ops = _make_ops(f, x, per_example, fn_name="f")
  checks.check_choice(method, "method", EXACT_METHODS)
  if method != "scan":
    return jnp.sum(elementwise(_dense(ops, method)), axis=(1, 2))
  batch, c = ops.xf.shape[0], ops.num_outputs
  pull = ops.pullback()

  @jax.checkpoint
  def one_class(e):  # (C,) -> (B,): this class's row of every J_b, reduced
    return jnp.sum(elementwise(pull(jnp.broadcast_to(e, (batch, c)))), axis=-1)

  def body(total, e):
    return total + one_class(e), None

  total, _ = jax.lax.scan(body, jnp.zeros((batch,), ops.xf.dtype), jnp.eye(c, dtype=ops.xf.dtype))
  return total


def _batch_fn(apply_fn: ApplyFn, params: Params) -> BatchFn:
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  return lambda x: apply_fn(params, x)


def jacobian(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  *,
  per_example: bool = False,
  method: str = "auto",
) -> jax.Array:
  """Dense per-example input-output Jacobians.

  .. math::
    J_b = \\frac{\\partial z_b}{\\partial x_b} \\in \\mathbb{R}^{C \\times d},
    \\quad z = \\mathrm{apply\\_fn}(\\mathrm{params}, x).

  Args:
    apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(B, ...)``. For a
      Flax linen model pass ``model.apply`` with ``{"params": params}``.
    params: the first argument of ``apply_fn``, any pytree.
    x: float array ``(B, ...)``.
    per_example: see the module docstring: ``False`` uses one batched pass per
      basis vector (right for models that do not mix examples), ``True`` the
      diagonal blocks of the batched Jacobian (right for all models).
    method: ``"vjp"``: vmap of a VJP over the ``C`` one-hot cotangents
      (reverse mode, ``C`` backward passes as one batched pass); ``"loop"``:
      the ``C`` backward passes unrolled, sharing one forward pass (the
      recipe of Hoffman et al.'s code; less memory than ``"vjp"``);
      ``"scan"``: the ``C`` backward passes in a ``lax.map`` loop, each
      rematerialized (least memory, about one backward pass's worth; slow
      for convolutions on XLA:CPU); ``"jvp"``: vmap of a JVP over the ``d``
      one-hot tangents (forward mode); ``"jacrev"``/``"jacfwd"``: ``vmap`` of
      ``jax.jacrev``/``jax.jacfwd`` of the single-example function.
      ``"auto"``: ``"jvp"`` when ``C > d``; ``"loop"`` when ``C <= 16``, the
      backend is the CPU and the model has convolutions (measured faster and
      smaller there); ``"vjp"`` otherwise.

  Returns:
    Array ``(B, C, d)`` with ``C`` the flattened output and ``d`` the
    flattened input size.

  Example:
    >>> import jax, jax.numpy as jnp, jaxjac
    >>> w = jnp.arange(6.).reshape(3, 2)
    >>> jaxjac.jacobian(lambda p, x: x @ p, w, jnp.ones((4, 3))).shape
    (4, 2, 3)
  """
  checks.check_choice(method, "method", EXACT_METHODS)
  ops = _make_ops(_batch_fn(apply_fn, params), x, per_example)
  return _dense(ops, method)


# ---------------------------------------------------------------------------
# Estimators. Each takes a batched function f: x -> logits and returns the
# per-example values, shape (B,).
# ---------------------------------------------------------------------------


def _sample(key: jax.Array, num: int, sampler: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """``num`` independent draws, vmapped over split keys: ``(num, ...)``."""
  return jax.vmap(sampler)(jax.random.split(key, num))


def _sphere(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Uniform on the unit sphere along the last axis."""
  g = jax.random.normal(key, shape, dtype)
  return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def frobenius_exact(
  f: BatchFn, x: jax.Array, *, per_example: bool = False, method: str = "auto"
) -> jax.Array:
  """Exact squared Frobenius norms ``||J_b||_F^2 = sum_ij J_ij^2``, shape ``(B,)``.

  Computes the dense Jacobian (see :func:`jacobian` for ``method``; the
  default reverse mode costs ``C`` VJPs) and sums its squares.
  """
  return _exact_sum(f, x, per_example, method, jnp.square)


def frobenius_projection(
  f: BatchFn,
  x: jax.Array,
  *,
  key: jax.Array,
  num_projections: int = 1,
  per_example: bool = False,
) -> jax.Array:
  """Random-projection estimate of ``||J_b||_F^2`` (Hoffman et al. 2019, eq. 9).

  .. math::
    \\|J\\|_F^2 = C \\, \\mathbb{E}_{v \\sim U(S^{C-1})} \\|v^\\top J\\|_2^2
    \\approx \\frac{C}{n} \\sum_{i=1}^{n} \\|v_i^\\top J\\|_2^2 .

  Unbiased; variance falls as ``1/num_projections``. Each projection is one
  reverse-mode VJP; the ``n`` projections share one forward pass (vmapped
  cotangents), and every example draws its own ``v``.
  """
  checks.check_key(key, needed_by="the projection estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, per_example, fn_name="f")
  batch, c = ops.xf.shape[0], ops.num_outputs
  v = _sample(key, n, lambda k: _sphere(k, (batch, c), ops.xf.dtype))
  w = ops.vjp_many(v)  # (n, B, d)
  return c * jnp.mean(jnp.sum(jnp.square(w), axis=-1), axis=0)


def frobenius_jvp(
  f: BatchFn,
  x: jax.Array,
  *,
  key: jax.Array,
  num_projections: int = 1,
  per_example: bool = False,
) -> jax.Array:
  """Forward-mode Hutchinson estimate of ``||J_b||_F^2`` in input space.

  .. math::
    \\|J\\|_F^2 = \\operatorname{tr}(J^\\top J)
    = \\mathbb{E}_{u \\sim N(0, I_d)} \\|J u\\|_2^2
    \\approx \\frac{1}{n} \\sum_{i=1}^{n} \\|J u_i\\|_2^2 .

  Unbiased; each sample is one JVP (forward mode, no stored activations), but
  its variance grows with the spread of ``J``'s singular values
  (``Var = 2 ||J^T J||_F^2 / n``), larger than the projection estimator's
  when ``d >> C``.
  """
  checks.check_key(key, needed_by="the jvp estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, per_example, fn_name="f")
  u = _sample(key, n, lambda k: jax.random.normal(k, ops.xf.shape, ops.xf.dtype))
  y = ops.jvp_many(u)  # (n, B, C)
  return jnp.mean(jnp.sum(jnp.square(y), axis=-1), axis=0)


def l11_exact(
  f: BatchFn, x: jax.Array, *, per_example: bool = False, method: str = "auto"
) -> jax.Array:
  """Exact entry-wise norms ``||J_b||_{1,1} = sum_ij |J_ij|``, shape ``(B,)``.

  The l_inf-attack Jacobian regularizer of Wu and Li (2024). See
  :func:`jacobian` for ``method``.
  """
  return _exact_sum(f, x, per_example, method, jnp.abs)


def l11_projection(
  f: BatchFn,
  x: jax.Array,
  *,
  key: jax.Array,
  num_projections: int = 1,
  per_example: bool = False,
) -> jax.Array:
  """Row-sampling estimate of ``||J_b||_{1,1}``: one VJP per sample.

  .. math::
    \\|J\\|_{1,1} = \\sum_c \\|e_c^\\top J\\|_1
    = C \\, \\mathbb{E}_{c \\sim U\\{1..C\\}} \\|e_c^\\top J\\|_1 .

  Unbiased: a uniformly drawn class ``c`` per example and projection (the
  l_{1,1} norm has no rotation-invariant projection identity, so the
  one-hot directions replace the sphere of the Frobenius estimator).
  """
  checks.check_key(key, needed_by="the projection estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, per_example, fn_name="f")
  batch, c = ops.xf.shape[0], ops.num_outputs
  v = _sample(
    key, n, lambda k: jax.nn.one_hot(jax.random.randint(k, (batch,), 0, c), c, dtype=ops.xf.dtype)
  )
  w = ops.vjp_many(v)
  return c * jnp.mean(jnp.sum(jnp.abs(w), axis=-1), axis=0)


def l11_jvp(
  f: BatchFn,
  x: jax.Array,
  *,
  key: jax.Array,
  num_projections: int = 1,
  per_example: bool = False,
) -> jax.Array:
  """Column-sampling estimate of ``||J_b||_{1,1}``: one JVP per sample.

  .. math::
    \\|J\\|_{1,1} = \\sum_j \\|J e_j\\|_1
    = d \\, \\mathbb{E}_{j \\sim U\\{1..d\\}} \\|J e_j\\|_1 .

  Unbiased, but with ``d`` input pixels its variance is large unless the
  Jacobian's columns have similar norms; prefer :func:`l11_projection`.
  """
  checks.check_key(key, needed_by="the jvp estimator")
  n = checks.check_positive_int(num_projections, "num_projections")
  ops = _make_ops(f, x, per_example, fn_name="f")
  batch, d = ops.xf.shape
  u = _sample(
    key, n, lambda k: jax.nn.one_hot(jax.random.randint(k, (batch,), 0, d), d, dtype=ops.xf.dtype)
  )
  y = ops.jvp_many(u)
  return d * jnp.mean(jnp.sum(jnp.abs(y), axis=-1), axis=0)


def spectral_power(
  f: BatchFn,
  x: jax.Array,
  *,
  key: jax.Array | None = None,
  iterations: int = 20,
  per_example: bool = False,
) -> jax.Array:
  """Squared largest singular value ``sigma_max(J_b)^2`` by power iteration.

  Alternates a JVP and a VJP, ``u <- J^T J u / ||J^T J u||``, for
  ``iterations`` steps from a Gaussian start (drawn from ``key``, or from a
  fixed key when ``key`` is None, so the result is deterministic), then
  returns ``||J u||^2`` with ``u`` held constant. By the envelope theorem
  its gradient with respect to the parameters is that of ``sigma_max^2``
  once ``u`` has converged (the spectral-norm regularizer of Yoshida and
  Miyato 2017, arXiv:1705.10941, on the input-output Jacobian). Convergence
  is geometric in ``(sigma_2 / sigma_1)^2``.
  """
  iterations = checks.check_positive_int(iterations, "iterations")
  ops = _make_ops(f, x, per_example, fn_name="f")
  start_key = jax.random.key(0) if key is None else key
  u0 = jax.random.normal(start_key, ops.xf.shape, ops.xf.dtype)

  def power(fn, xi, ui):
    _, push = jax.linearize(fn, xi)
    pull = jax.linear_transpose(push, xi)

    def normalize(w):
      norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
      return w / jnp.maximum(norm, jnp.finfo(w.dtype).tiny)

    u = jax.lax.fori_loop(0, iterations, lambda _, u: normalize(pull(push(u))[0]), normalize(ui))
    return jax.lax.stop_gradient(u)

  if per_example:
    u = jax.vmap(lambda b, xi, ui: power(ops.row_fn(b), xi, ui))(
      jnp.arange(ops.xf.shape[0]), ops.xf, u0
    )
  else:  # One batched pass per step; each row is normalized on its own.
    u = power(ops.g, ops.xf, u0)
  y = ops.jvp_many(u[None])[0]
  return jnp.sum(jnp.square(y), axis=-1)
