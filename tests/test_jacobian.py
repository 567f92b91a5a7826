"""Core: dense Jacobians, exact norms, estimators, per-example paths, gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from jax.test_util import check_grads

import jaxjac

B = 6


class SmallMLP(nn.Module):
  hidden: int = 16
  classes: int = 5

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = jnp.tanh(nn.Dense(self.hidden)(x))
    return nn.Dense(self.classes)(x)


class SmallCNN(nn.Module):
  classes: int = 4

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(3, (3, 3), padding="SAME")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = jnp.tanh(nn.Conv(4, (3, 3), padding="SAME")(x))
    return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


class BatchMixer(nn.Module):
  """Normalizes over the batch, like BatchNorm in training mode."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8)(x.reshape(x.shape[0], -1))
    h = (h - jnp.mean(h, axis=0, keepdims=True)) / jnp.sqrt(
      jnp.var(h, axis=0, keepdims=True) + 1e-3
    )
    return nn.Dense(3)(jnp.tanh(h))


def _setup(kind, dtype=jnp.float32, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  if kind == "mlp":
    model, shape = SmallMLP(), (B, 3, 4)
  elif kind == "cnn":
    model, shape = SmallCNN(), (B, 6, 6, 1)
  else:
    model, shape = BatchMixer(), (B, 5)
  x = jax.random.uniform(k1, shape, dtype)
  variables = model.init(k2, x)
  variables = jax.tree.map(lambda a: a.astype(dtype), variables)
  return model.apply, variables, x


def _dense_reference(apply_fn, params, x):
  """Per-example dense Jacobians by jax.jacfwd of the single-example function."""
  single = lambda xi: apply_fn(params, xi[None])[0]
  jac = jax.vmap(jax.jacfwd(single))(x)
  return jac.reshape(x.shape[0], -1, int(np.prod(x.shape[1:])))


def _finite_difference(apply_fn, params, x, h):
  """Per-example Jacobians by central differences, float64 on the host."""
  x = np.asarray(x, np.float64)
  params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  batch, dim = x.shape[0], int(np.prod(x.shape[1:]))
  flat = x.reshape(batch, dim)
  cols = []
  for j in range(dim):
    step = np.zeros_like(flat)
    step[:, j] = h
    plus = np.asarray(apply_fn(params64, (flat + step).reshape(x.shape)))
    minus = np.asarray(apply_fn(params64, (flat - step).reshape(x.shape)))
    cols.append((plus - minus).reshape(batch, -1) / (2 * h))
  return np.stack(cols, axis=-1)  # (B, C, d)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("method", jaxjac.EXACT_METHODS)
@pytest.mark.parametrize("mixes_batch", [False, True])
def test_jacobian_matches_jacfwd(kind, method, mixes_batch):
  apply_fn, params, x = _setup(kind)
  ref = _dense_reference(apply_fn, params, x)
  got = jaxjac.jacobian(apply_fn, params, x, method=method, mixes_batch=mixes_batch)
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=tol(1e-5), atol=tol(1e-6))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_exact_norms_match_dense_and_finite_differences(kind):
  apply_fn, params, x = _setup(kind)
  ref = np.asarray(_dense_reference(apply_fn, params, x), np.float64)
  with jax.enable_x64(True):
    fd = _finite_difference(apply_fn, params, x, h=1e-5)
  # Float64 central differences agree with the float32 AD Jacobian to ~1e-6.
  np.testing.assert_allclose(fd, ref, rtol=1e-4, atol=1e-6)
  got = {}
  for method in ("auto", "vjp", "loop", "scan"):  # scan reduces inside its loop
    for mixes_batch in (False, True):
      for norm in ("frobenius", "l11"):
        got[norm, method, mixes_batch] = jaxjac.jacobian_penalty(
          apply_fn, params, x, norm=norm, method=method, mixes_batch=mixes_batch
        )
  spec_got = jaxjac.jacobian_penalty(apply_fn, params, x, norm="spectral", iterations=200)
  for reference in (ref, fd):
    want = {
      "frobenius": np.mean(np.sum(reference**2, axis=(1, 2))),
      "l11": np.mean(np.sum(np.abs(reference), axis=(1, 2))),
    }
    for (norm, method, mixes_batch), value in got.items():
      np.testing.assert_allclose(
        value, want[norm], rtol=tol(1e-5), err_msg=f"{norm} {method} {mixes_batch}"
      )
    spec = np.mean(np.linalg.svd(reference, compute_uv=False)[:, 0] ** 2)
    np.testing.assert_allclose(spec_got, spec, rtol=tol(1e-4))


def test_spectral_mixes_batch_and_random_start_agree():
  apply_fn, params, x = _setup("cnn")
  ref = (
    np.linalg.svd(np.asarray(_dense_reference(apply_fn, params, x)), compute_uv=False)[:, 0] ** 2
  )
  for kwargs in ({"mixes_batch": True}, {"key": jax.random.key(7)}):
    got = jaxjac.jacobian_penalty(
      apply_fn, params, x, norm="spectral", iterations=200, reduction="none", **kwargs
    )
    np.testing.assert_allclose(got, ref, rtol=tol(1e-4))


def _estimates(fn, keys):
  return np.asarray(jax.jit(jax.vmap(fn))(keys), np.float64)  # (K, B)


@pytest.mark.probabilistic
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(
  "norm,estimator",
  [("frobenius", "projection"), ("frobenius", "jvp"), ("l11", "projection"), ("l11", "jvp")],
)
def test_estimators_unbiased_with_variance_one_over_n(kind, norm, estimator):
  """2000 fixed keys: mean within 3% of exact; variance(n=1)/variance(n=4) ~ 4."""
  apply_fn, params, x = _setup(kind)
  exact = np.asarray(
    jaxjac.jacobian_penalty(apply_fn, params, x, norm=norm, reduction="none"), np.float64
  )
  keys = jax.random.split(jax.random.key(2024), 2000)

  def est(n):
    return lambda k: jaxjac.jacobian_penalty(
      apply_fn,
      params,
      x,
      key=k,
      norm=norm,
      estimator=estimator,
      num_projections=n,
      reduction="none",
    )

  one = _estimates(est(1), keys)
  four = _estimates(est(4), keys)
  # Per-example means within 3% (the standard error here is < 1.5%).
  np.testing.assert_allclose(one.mean(axis=0), exact, rtol=0.03)
  np.testing.assert_allclose(four.mean(axis=0), exact, rtol=0.03)
  ratio = one.var(axis=0) / four.var(axis=0)
  # 1/n scaling: the ratio of variances is 4 up to the sampling error of
  # 2000-sample variance estimates (< 15% for these distributions).
  assert np.all((ratio > 3.0) & (ratio < 5.3)), ratio


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_batched_and_mixes_batch_paths_agree_for_independent_examples(kind):
  apply_fn, params, x = _setup(kind)
  key = jax.random.key(3)
  for norm, estimator in [
    ("frobenius", "exact"),
    ("frobenius", "projection"),
    ("frobenius", "jvp"),
    ("l11", "exact"),
    ("l11", "projection"),
    ("spectral", "exact"),
  ]:
    kw = dict(key=key, norm=norm, estimator=estimator, num_projections=3, reduction="none")
    batched = jaxjac.jacobian_penalty(apply_fn, params, x, **kw)
    single = jaxjac.jacobian_penalty(apply_fn, params, x, mixes_batch=True, **kw)
    np.testing.assert_allclose(single, batched, rtol=tol(1e-4), err_msg=f"{norm}/{estimator}")


def test_batched_path_is_wrong_for_a_batch_mixing_model():
  apply_fn, params, x = _setup("mixer")
  batch, dim = x.shape
  # Reference: diagonal blocks of the Jacobian of the whole batched function.
  full = jax.jacfwd(lambda xx: apply_fn(params, xx))(x)  # (B, C, B, d)
  diag = jnp.stack([full[b, :, b, :] for b in range(batch)])
  blocks = jaxjac.jacobian(apply_fn, params, x, mixes_batch=True)
  np.testing.assert_allclose(blocks, diag, rtol=tol(1e-5), atol=tol(1e-6))
  exact_pe = jaxjac.jacobian_penalty(apply_fn, params, x, mixes_batch=True, reduction="none")
  np.testing.assert_allclose(exact_pe, jnp.sum(diag**2, axis=(1, 2)), rtol=tol(1e-5))
  # The batched trick sums cross-example terms: it must differ visibly.
  batched = jaxjac.jacobian_penalty(apply_fn, params, x, reduction="none")
  assert np.max(np.abs(batched - exact_pe) / exact_pe) > 0.05
  # The projection estimator with mixes_batch=True is unbiased for the diag blocks.
  keys = jax.random.split(jax.random.key(5), 2000)
  est = _estimates(
    lambda k: jaxjac.jacobian_penalty(
      apply_fn, params, x, key=k, estimator="projection", mixes_batch=True, reduction="none"
    ),
    keys,
  )
  np.testing.assert_allclose(est.mean(axis=0), exact_pe, rtol=0.03)


@pytest.mark.parametrize(
  "norm,estimator,mixes_batch,method",
  [
    ("frobenius", "exact", False, "auto"),
    ("frobenius", "projection", False, "auto"),
    ("frobenius", "jvp", False, "auto"),
    ("l11", "exact", False, "auto"),
    ("l11", "projection", True, "auto"),
    ("spectral", "exact", False, "auto"),
    ("frobenius", "projection", True, "auto"),
    ("frobenius", "exact", False, "scan"),
    ("l11", "exact", True, "loop"),
  ],
)
def test_gradients_wrt_params_float64(norm, estimator, mixes_batch, method):
  with jax.enable_x64(True):
    apply_fn, params, x = _setup("mlp", jnp.float64)
    key = jax.random.key(11)
    fn = jax.jit(
      lambda p: jaxjac.jacobian_penalty(
        apply_fn,
        p,
        x,
        key=key,
        norm=norm,
        estimator=estimator,
        num_projections=2,
        mixes_batch=mixes_batch,
        iterations=300,
        method=method,
      )
    )
    # Small step: |J_ij| has kinks at 0 and the smallest |J_ij| here is ~5e-5.
    check_grads(fn, (params,), order=1, modes=("rev",), atol=1e-4, rtol=1e-4, eps=1e-6)


def test_jit_compiles_once_and_vmaps_over_params():
  apply_fn, params, x = _setup("mlp")

  @jax.jit
  @chex.assert_max_traces(n=1)
  def penalty(p, xx, key):
    return jaxjac.jacobian_penalty(apply_fn, p, xx, key=key, estimator="projection")

  values = [penalty(params, x + i, jax.random.key(i)) for i in range(3)]
  assert len({float(v) for v in values}) == 3
  # vmap over a stack of parameter sets equals a Python loop over them.
  stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
  vm = jax.vmap(lambda p: jaxjac.jacobian_penalty(apply_fn, p, x))(stacked)
  loop = [
    jaxjac.jacobian_penalty(apply_fn, jax.tree.map(lambda a: s * a, params), x) for s in (1, 2)
  ]
  np.testing.assert_allclose(vm, loop, rtol=tol(1e-5))


def test_linear_model_closed_form():
  """For z = x W the Jacobian is W^T for every example: exact norms by hand."""
  w = jax.random.normal(jax.random.key(0), (7, 3))
  x = jax.random.normal(jax.random.key(1), (4, 7))
  apply_fn = lambda p, xx: xx @ p
  np.testing.assert_allclose(jaxjac.jacobian_penalty(apply_fn, w, x), jnp.sum(w**2), rtol=1e-6)
  np.testing.assert_allclose(
    jaxjac.jacobian_penalty(apply_fn, w, x, norm="l11"), jnp.sum(jnp.abs(w)), rtol=1e-6
  )
  top = np.linalg.svd(np.asarray(w), compute_uv=False)[0] ** 2
  np.testing.assert_allclose(
    jaxjac.jacobian_penalty(apply_fn, w, x, norm="spectral", iterations=100), top, rtol=1e-5
  )


def test_auto_method_choice():
  # "auto": forward mode for wide outputs; on CPU an unrolled class loop for small-C
  # convolutional models (measured faster and smaller there), else the vmapped VJP.
  from jaxjac._src import jacobian as jac_lib  # noqa: PLC0415

  x = jnp.ones((2, 8, 8, 1))
  conv = lambda xb: (
    nn.Conv(3, (3, 3))
    .apply({"params": {"kernel": jnp.ones((3, 3, 1, 3)), "bias": jnp.zeros(3)}}, xb)
    .reshape(2, -1)[:, :10]
  )
  dense = lambda xb: xb.reshape(2, -1)[:, :10] * 2.0
  wide = lambda xb: jnp.tile(xb.reshape(2, -1), (1, 2))
  pick = lambda f: jac_lib._auto_method(jac_lib._make_ops(f, x, False))
  assert pick(dense) == "vjp" and pick(wide) == "jvp"
  assert pick(conv) == ("loop" if jax.default_backend() == "cpu" else "vjp")
  many = lambda xb: jnp.tile(conv(xb), (1, 2))  # C = 20 > LOOP_MAX_OUTPUTS
  assert pick(many) == "vjp"


class DropoutMLP(nn.Module):
  """Dropout in training mode: the mask is drawn for the whole batch's shape."""

  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(32)(x.reshape(x.shape[0], -1)))
    h = nn.Dropout(0.5, deterministic=False)(h)
    return nn.Dense(4)(h)


@pytest.mark.parametrize("mixes_batch", [False, True])
def test_all_methods_agree_on_a_batch_dependent_model(mixes_batch):
  """Every method evaluates the model on the whole batch (issue: jacrev/jacfwd used a batch
  of one, so the dropout mask, drawn for the batch shape, was another one)."""
  x = jax.random.uniform(jax.random.key(0), (B, 5))
  model = DropoutMLP()
  variables = model.init(jax.random.key(1), x)
  apply_fn = lambda v, xx: model.apply(v, xx, rngs={"dropout": jax.random.key(2)})
  # Reference: the diagonal blocks of the batched Jacobian, by jacfwd of the whole batch.
  full = jax.jacfwd(lambda xx: apply_fn(variables, xx))(x)  # (B, C, B, d)
  ref = jnp.stack([full[b, :, b, :] for b in range(B)])
  for method in jaxjac.EXACT_METHODS:
    got = jaxjac.jacobian(apply_fn, variables, x, method=method, mixes_batch=mixes_batch)
    np.testing.assert_allclose(got, ref, rtol=tol(1e-5), atol=tol(1e-6), err_msg=method)
  # The Frobenius penalty by each method equals the reference's.
  want = float(jnp.mean(jnp.sum(ref**2, axis=(1, 2))))
  for method in jaxjac.EXACT_METHODS:
    got = jaxjac.jacobian_penalty(apply_fn, variables, x, method=method, mixes_batch=mixes_batch)
    np.testing.assert_allclose(got, want, rtol=tol(1e-5), err_msg=method)


def test_all_methods_agree_on_a_batch_statistics_model_with_mixes_batch():
  apply_fn, params, x = _setup("mixer")
  full = jax.jacfwd(lambda xx: apply_fn(params, xx))(x)
  ref = jnp.stack([full[b, :, b, :] for b in range(B)])
  for method in jaxjac.EXACT_METHODS:
    got = jaxjac.jacobian(apply_fn, params, x, method=method, mixes_batch=True)
    np.testing.assert_allclose(got, ref, rtol=tol(1e-5), atol=tol(1e-6), err_msg=method)
  # Without mixes_batch the reverse-mode methods all give the transposed batch sum
  # sum_b' dz_b'/dx_b (the batched trick), jacrev included.
  rev = jnp.einsum("acbd->bcd", full)
  for method in ("vjp", "loop", "scan", "jacrev"):
    got = jaxjac.jacobian(apply_fn, params, x, method=method)
    np.testing.assert_allclose(got, rev, rtol=tol(1e-5), atol=tol(1e-6), err_msg=method)
  # and the forward-mode ones the input-side sum sum_b' dz_b/dx_b', jacfwd included.
  fwd = jnp.einsum("bcad->bcd", full)
  for method in ("jvp", "jacfwd"):
    got = jaxjac.jacobian(apply_fn, params, x, method=method)
    np.testing.assert_allclose(got, fwd, rtol=tol(1e-5), atol=tol(1e-6), err_msg=method)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize(
  "norm,estimator", [("frobenius", "exact"), ("frobenius", "projection"), ("frobenius", "jvp"),
                     ("l11", "projection"), ("l11", "jvp"), ("spectral", "exact")],
)  # fmt: skip
def test_low_precision_inputs_with_a_float32_model(dtype, norm, estimator):
  """x in float16/bfloat16, model in float32: the cotangents are built in the logits' dtype.

  The inputs are exactly representable in both dtypes, so the only difference from the
  float32 call is the rounding of the input-side products to ``dtype`` (rel. 2^-8 / 2^-11).
  """
  apply_fn, params, x = _setup("cnn")
  x_low = x.astype(dtype)
  x32 = x_low.astype(jnp.float32)
  kw = dict(key=jax.random.key(4), norm=norm, estimator=estimator, num_projections=3,
            reduction="none", iterations=100)  # fmt: skip
  got = jaxjac.jacobian_penalty(apply_fn, params, x_low, **kw)
  want = jaxjac.jacobian_penalty(apply_fn, params, x32, **kw)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=2e-2)
  grad = jax.grad(
    lambda p: jaxjac.jacobian_penalty(apply_fn, p, x_low, **{**kw, "reduction": "mean"})
  )
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad(params)))


def test_reductions():
  apply_fn, params, x = _setup("mlp")
  values = jaxjac.jacobian_penalty(apply_fn, params, x, reduction="none")
  ref = np.sum(np.asarray(_dense_reference(apply_fn, params, x)) ** 2, axis=(1, 2))
  assert values.shape == (B,)
  np.testing.assert_allclose(values, ref, rtol=tol(1e-5))
  total = jaxjac.jacobian_penalty(apply_fn, params, x, reduction="sum")
  mean = jaxjac.jacobian_penalty(apply_fn, params, x)
  np.testing.assert_allclose(total, ref.sum(), rtol=tol(1e-5))
  np.testing.assert_allclose(mean, ref.mean(), rtol=tol(1e-5))


def test_projection_variance_never_below_jvp_on_random_jacobians():
  """The documented variance formulas: Var_proj <= Var_jvp for every J (here 200 random
  matrices of random shapes and spectra), each formula checked by simulation once."""
  from jaxjac._src import estimators  # noqa: PLC0415

  rng = np.random.default_rng(0)
  for _ in range(200):
    c, d = rng.integers(1, 12, size=2)
    s2 = rng.exponential(size=min(c, d)) ** rng.uniform(0, 4)  # sigma_k^2
    var_proj = 2 / (c + 2) * (c * np.sum(s2**2) - np.sum(s2) ** 2)
    var_jvp = 2 * np.sum(s2**2)
    assert -1e-9 <= var_proj <= var_jvp
  # Simulation for one J (C = 3, d = 5): both formulas within 5% of 40000 draws.
  jac = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  s2 = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False) ** 2
  keys = jax.random.split(jax.random.key(0), 40000)
  xx = jnp.zeros((1, 5))
  proj = jax.vmap(lambda k: estimators.frobenius_projection(lambda v: v @ jac.T, xx, key=k))(keys)
  jvp = jax.vmap(lambda k: estimators.frobenius_jvp(lambda v: v @ jac.T, xx, key=k))(keys)
  np.testing.assert_allclose(np.var(proj), 2 / 5 * (3 * np.sum(s2**2) - np.sum(s2) ** 2), rtol=0.05)
  np.testing.assert_allclose(np.var(jvp), 2 * np.sum(s2**2), rtol=0.05)
