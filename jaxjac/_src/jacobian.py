"""Input-output Jacobians of classifiers: dense Jacobians, exact norms, methods.

A classifier ``f`` maps a batch ``x`` of shape ``(B, ...)`` to logits of shape
``(B, ...)``. Dims after the batch are flattened: ``d`` inputs, ``C`` outputs,
and ``J_b = dz_b / dx_b`` is a ``C x d`` matrix per example.

Two ways to get per-example products ``v_b^T J_b`` and ``J_b u_b``, chosen by
``mixes_batch``:

* ``mixes_batch=False`` (the default: the model treats examples
  independently): one VJP (or JVP) of the batched logits with a per-example
  cotangent (tangent). Because row ``b`` of the output depends only on row
  ``b`` of the input, the result's row ``b`` is ``v_b^T J_b``. This is the
  trick of Hoffman et al.'s reference code: as cheap as one backward pass,
  and the model always sees the whole batch. It is **wrong for models that
  mix examples** (BatchNorm in training mode, attention across the batch):
  there it returns ``sum_b' v_b'^T dz_b'/dx_b``.
* ``mixes_batch=True`` (the model mixes examples): for each ``b``, the
  Jacobian of ``z_b`` with respect to ``x_b`` with the rest of the batch held
  fixed, the diagonal block of the batched Jacobian, by ``vmap`` over
  examples. It is right for every model, mixing or not, and costs ``B``
  forward passes of the batch (``O(B^2)``), so use it only for models that
  mix the batch.

Every method of :func:`jacobian` evaluates the model on the whole batch, so
for one setting of ``mixes_batch`` all methods give the same Jacobian, also
for functions whose output depends on the batch's shape or statistics.

Cotangents are built in the logits' dtype and tangents in ``x``'s, so a
low-precision ``x`` (float16, bfloat16) works with a float32 model; norms are
accumulated in the wider of the two dtypes.

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
from jax.typing import ArrayLike

from jaxjac._src import checks

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]
BatchFn = Callable[[jax.Array], jax.Array]

JACOBIAN_NORMS = ("frobenius", "l11", "spectral")
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
    row_fn: with ``mixes_batch``, ``b -> (x_b -> z_b)`` on flat vectors (the
      rest of the batch fixed), for per-example transforms; else None.
    g: the batched function on flat arrays, ``(B, d) -> (B, C)``.
    xf: the flattened input, ``(B, d)``.
    num_outputs: ``C``.
    out_dtype: the logits' dtype (the cotangents' dtype).
    acc_dtype: the dtype in which norms are accumulated.
  """

  vjp_many: Callable[[jax.Array], jax.Array]
  pullback: Callable[[], Callable[[jax.Array], jax.Array]]
  jvp_many: Callable[[jax.Array], jax.Array]
  row_fn: Callable[[jax.Array], Callable[[jax.Array], jax.Array]] | None
  g: Callable[[jax.Array], jax.Array]
  xf: jax.Array
  num_outputs: int
  out_dtype: Any
  acc_dtype: Any


def _make_ops(f: BatchFn, x: ArrayLike, mixes_batch: bool, *, fn_name="apply_fn") -> _Ops:
  checks.check_float_array(x, "x")
  checks.check_nonempty_batch(x, "x")
  x = jnp.asarray(x)
  out = checks.batch_output_struct(f, x, fn_name=fn_name)
  batch = x.shape[0]
  num_outputs = math.prod(out.shape[1:])
  xf = x.reshape(batch, -1)

  def g(flat: jax.Array) -> jax.Array:  # (B, d) -> (B, C)
    return f(flat.reshape(x.shape)).reshape(batch, num_outputs)

  def per_row(fn):  # fn(row_fn(b), x_b, m_b) vmapped over b; (n, B, .) in and out
    def many(m):
      one = lambda b, xi, mb: fn(row_fn(b), xi, mb)
      out = jax.vmap(one)(jnp.arange(batch), xf, jnp.swapaxes(m, 0, 1))
      return jnp.swapaxes(out, 0, 1)

    return many

  def vjp_rows(fn, xi, vb):  # vb: (n, C)
    _, pull = jax.vjp(fn, xi)
    return jax.vmap(lambda c: pull(c)[0])(vb)

  def jvp_rows(fn, xi, ub):
    return jax.vmap(lambda t: jax.jvp(fn, (xi,), (t,))[1])(ub)

  row_fn: Callable[[jax.Array], Callable[[jax.Array], jax.Array]] | None
  if mixes_batch:

    def example_fn(b: jax.Array) -> Callable[[jax.Array], jax.Array]:
      return lambda xi: g(xf.at[b].set(xi))[b]

    row_fn = example_fn

    vjp_many, jvp_many = per_row(vjp_rows), per_row(jvp_rows)

    def pullback():  # per example, each cotangent needs its own vmapped forward passes
      return lambda v: vjp_many(v[None])[0]

  else:
    row_fn = None

    def vjp_many(v):
      return vjp_rows(g, xf, v)

    def jvp_many(u):
      return jvp_rows(g, xf, u)

    def pullback():
      _, pull = jax.vjp(g, xf)
      return lambda v: pull(v)[0]

  acc = jnp.promote_types(x.dtype, out.dtype)
  return _Ops(vjp_many, pullback, jvp_many, row_fn, g, xf, num_outputs, out.dtype, acc)


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


def _transform(ops: _Ops, method: str) -> jax.Array:
  """``jax.jacrev``/``jax.jacfwd`` per example, the model always on the whole batch."""
  batch, dim = ops.xf.shape
  row_fn = ops.row_fn
  if row_fn is not None:  # mixes_batch: the diagonal blocks, one row at a time
    transform = jax.jacrev if method == "jacrev" else jax.jacfwd
    return jax.vmap(lambda b, xi: transform(row_fn(b))(xi))(jnp.arange(batch), ops.xf)
  if method == "jacrev":  # d/dx of sum_b z_b: row b of the result is J_b (no mixing)
    summed = lambda xx: jnp.sum(ops.g(xx), axis=0)
    return jnp.moveaxis(jax.jacrev(summed)(ops.xf), 0, 1)
  # d/dt of z(x + 1 t^T), t shared by all examples: J_b for row b (no mixing)
  shifted = lambda t: ops.g(ops.xf + t[None])
  return jax.jacfwd(shifted)(jnp.zeros((dim,), ops.xf.dtype))


def _dense(ops: _Ops, method: str) -> jax.Array:
  """Per-example Jacobians ``(B, C, d)`` by the given exact method."""
  batch, dim = ops.xf.shape
  num_outputs = ops.num_outputs
  if method == "auto":
    method = _auto_method(ops)
  eye = jnp.eye(num_outputs, dtype=ops.out_dtype)
  if method == "vjp":  # C reverse passes, vmapped over one-hot cotangents.
    cot = jnp.broadcast_to(eye[:, None], (num_outputs, batch, num_outputs))
    jac = jnp.moveaxis(ops.vjp_many(cot), 0, 1)
  elif method == "loop":  # C reverse passes unrolled, sharing one forward pass.
    pull = ops.pullback()
    jac = jnp.stack([pull(jnp.broadcast_to(e, (batch, num_outputs))) for e in eye], axis=1)
  elif method == "scan":  # C reverse passes in a loop, each rematerialized: least memory.
    pull = ops.pullback()
    one_class = jax.checkpoint(lambda e: pull(jnp.broadcast_to(e, (batch, num_outputs))))
    jac = jnp.moveaxis(jax.lax.map(one_class, eye), 0, 1)
  elif method == "jvp":  # d forward passes, vmapped over one-hot tangents.
    tan = jnp.broadcast_to(jnp.eye(dim, dtype=ops.xf.dtype)[:, None], (dim, batch, dim))
    jac = jnp.moveaxis(ops.jvp_many(tan), 0, 2)
  elif method in ("jacrev", "jacfwd"):
    jac = _transform(ops, method)
  else:
    raise ValueError(f"`method` must be one of {EXACT_METHODS}, got {method!r}.")
  return jac.astype(ops.acc_dtype)


def _exact_sum(f: BatchFn, x: ArrayLike, mixes_batch: bool, method: str, elementwise) -> jax.Array:
  """``sum_ij elementwise(J_b)_ij`` per example, shape ``(B,)``.

  With ``method="scan"`` the rows ``e_c^T J`` are reduced inside the loop, so
  the dense ``(B, C, d)`` Jacobian is never stored; otherwise it is built by
  :func:`_dense` and reduced.
  """
  checks.check_choice(method, "method", EXACT_METHODS)
  ops = _make_ops(f, x, mixes_batch, fn_name="f")
  if method != "scan":
    return jnp.sum(elementwise(_dense(ops, method)), axis=(1, 2))
  batch, c = ops.xf.shape[0], ops.num_outputs
  pull = ops.pullback()

  @jax.checkpoint
  def one_class(e):  # (C,) -> (B,): this class's row of every J_b, reduced
    row = pull(jnp.broadcast_to(e, (batch, c))).astype(ops.acc_dtype)
    return jnp.sum(elementwise(row), axis=-1)

  def body(total, e):
    return total + one_class(e), None

  eye = jnp.eye(c, dtype=ops.out_dtype)
  total, _ = jax.lax.scan(body, jnp.zeros((batch,), ops.acc_dtype), eye)
  return total


def batch_fn(apply_fn: ApplyFn, params: Params) -> BatchFn:
  """``x -> apply_fn(params, x)``, after checking that ``apply_fn`` is callable."""
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  return lambda x: apply_fn(params, x)


def jacobian(
  apply_fn: ApplyFn,
  params: Params,
  x: ArrayLike,
  *,
  mixes_batch: bool = False,
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
    x: float array ``(B, ...)``, ``B >= 1``.
    mixes_batch: see the module docstring: ``False`` (the model treats
      examples independently) uses one batched pass per basis vector;
      ``True`` (the model mixes examples, e.g. BatchNorm in training mode)
      computes the diagonal blocks of the batched Jacobian by ``vmap``, right
      for all models.
    method: ``"vjp"``: vmap of a VJP over the ``C`` one-hot cotangents
      (reverse mode, ``C`` backward passes as one batched pass); ``"loop"``:
      the ``C`` backward passes unrolled, sharing one forward pass (the
      recipe of Hoffman et al.'s code; less memory than ``"vjp"``);
      ``"scan"``: the ``C`` backward passes in a ``lax.map`` loop, each
      rematerialized (least memory, about one backward pass's worth; slow
      for convolutions on XLA:CPU); ``"jvp"``: vmap of a JVP over the ``d``
      one-hot tangents (forward mode); ``"jacrev"``/``"jacfwd"``:
      ``jax.jacrev``/``jax.jacfwd`` of the batched function (of each
      example's row with ``mixes_batch=True``). ``"auto"``: ``"jvp"`` when
      ``C > d``; ``"loop"`` when ``C <= 16``, the backend is the CPU and the
      model has convolutions (measured faster and smaller there); ``"vjp"``
      otherwise. Every method evaluates the model on the whole batch.

  Returns:
    Array ``(B, C, d)`` with ``C`` the flattened output and ``d`` the
    flattened input size, in the wider of the dtypes of ``x`` and the logits.

  Raises:
    ValueError: unknown ``method``, an empty batch, or logits without the
      batch dimension of ``x``.
    TypeError: non-float ``x`` or a non-callable ``apply_fn``.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.arange(6.).reshape(3, 2)
    >>> jac = jaxjac.jacobian(lambda p, x: x @ p, w, jnp.ones((4, 3)))
    >>> jac.shape
    (4, 2, 3)
    >>> bool((jac[0] == w.T).all())  # for z = x W, J = W^T for every example
    True
  """
  checks.check_choice(method, "method", EXACT_METHODS)
  checks.check_float_array(x, "x")
  checks.check_nonempty_batch(x, "x")
  checks.check_finite(x, "x")
  ops = _make_ops(batch_fn(apply_fn, params), x, mixes_batch)
  return _dense(ops, method)


def frobenius_exact(
  f: BatchFn, x: ArrayLike, *, mixes_batch: bool = False, method: str = "auto"
) -> jax.Array:
  """Exact squared Frobenius norms ``||J_b||_F^2 = sum_ij J_ij^2``, shape ``(B,)``.

  .. math::
    \\|J_b\\|_F^2 = \\sum_{c=1}^{C} \\sum_{j=1}^{d} (J_b)_{cj}^2 .

  Computes the dense Jacobian (see :func:`jacobian` for ``method`` and
  ``mixes_batch``; the default reverse mode costs ``C`` VJPs) and sums its
  squares. ``f`` is the batched function ``x -> logits``.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., 2.], [3., 4.], [5., 6.]])
    >>> jaxjac.frobenius_exact(lambda x: x @ w, jnp.ones((2, 3))).tolist()
    [91.0, 91.0]
  """
  return _exact_sum(f, x, mixes_batch, method, jnp.square)


def l11_exact(
  f: BatchFn, x: ArrayLike, *, mixes_batch: bool = False, method: str = "auto"
) -> jax.Array:
  """Exact entry-wise norms ``||J_b||_{1,1} = sum_ij |J_ij|``, shape ``(B,)``.

  .. math::
    \\|J_b\\|_{1,1} = \\sum_{c=1}^{C} \\sum_{j=1}^{d} |(J_b)_{cj}| .

  The l_inf-attack Jacobian regularizer of Wu and Li (2024,
  arXiv:2412.12449). See :func:`jacobian` for ``method`` and
  ``mixes_batch``.

  Example:
    >>> import jax.numpy as jnp, jaxjac
    >>> w = jnp.array([[1., -2.], [3., 4.], [-5., 6.]])
    >>> jaxjac.l11_exact(lambda x: x @ w, jnp.ones((2, 3))).tolist()
    [21.0, 21.0]
  """
  return _exact_sum(f, x, mixes_batch, method, jnp.abs)
