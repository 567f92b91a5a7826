"""Wu & Li surrogates: first-order robust loss and its Jacobian upper bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol

import jaxjac

CE = jaxjac.softmax_cross_entropy


def _random_mlp(key, scale, d=10, h=12, c=5):
  k1, k2, k3 = jax.random.split(key, 3)
  params = (
    scale * jax.random.normal(k1, (d, h)) / math.sqrt(d),
    scale * jax.random.normal(k2, (h, c)) / math.sqrt(h),
    jax.random.normal(k3, (c,)),
  )
  apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1] + p[2][None]
  return apply_fn, params


def test_input_gradient_and_first_order_loss_by_hand():
  apply_fn, params = _random_mlp(jax.random.key(0), 2.0)
  x = jax.random.normal(jax.random.key(1), (8, 10))
  y = jnp.arange(8) % 5
  losses, grads = jax.jit(lambda pr: jaxjac.input_gradient(CE, apply_fn, pr, x, y))(params)
  single = lambda xi, yi: CE(apply_fn(params, xi[None]), yi[None])[0]
  ref_grads = jax.vmap(jax.grad(single))(x, y)
  np.testing.assert_allclose(grads, ref_grads, rtol=tol(1e-5), atol=tol(1e-6))
  np.testing.assert_allclose(losses, jax.vmap(single)(x, y), rtol=tol(1e-6))
  for p, q in ((2, 2), (math.inf, 1)):
    want = losses + 0.3 * np.linalg.norm(np.asarray(ref_grads), ord=q, axis=1)
    got = jax.jit(
      lambda pr: jaxjac.first_order_robust_loss(
        CE, apply_fn, pr, x, y, eps=0.3, p=p, reduction="none"
      )
    )(params)
    np.testing.assert_allclose(got, want, rtol=tol(1e-5))


@pytest.mark.parametrize("p", [2, math.inf])
def test_surrogate_upper_bounds_first_order_loss_on_random_models(p):
  """Over 50 random models of growing scale and random inputs, per example."""
  apply_fn, _ = _random_mlp(jax.random.key(0), 1.0)

  @jax.jit
  def both(params, x, y, eps):
    kw = dict(eps=eps, p=p, reduction="none")
    first = jaxjac.first_order_robust_loss(CE, apply_fn, params, x, y, **kw)
    surr = jaxjac.jacobian_surrogate_loss(CE, apply_fn, params, x, y, **kw)
    return first, surr, CE(apply_fn(params, x), y)

  worst = 0.0
  for i in range(50):
    _, params = _random_mlp(jax.random.key(i), scale=0.5 + 0.2 * i)
    x = jax.random.normal(jax.random.key(1000 + i), (16, 10))
    y = jax.random.randint(jax.random.key(2000 + i), (16,), 0, 5)
    first, surr, loss = both(params, x, y, 0.05 + 0.01 * i)
    assert np.all(np.asarray(surr) >= np.asarray(first) - 1e-5)
    worst = max(worst, float(jnp.max((first - loss) / (surr - loss))))
  # The bound is not vacuous: some examples use a sizeable part of it.
  assert worst > 0.2


def test_constants_are_tight():
  """Cases that attain the bounds: a looser constant would fail, a smaller one break."""
  w = jnp.array([0.3, -1.2, 0.5, 2.0])
  # p = 2: J = (e_j - e_y) w^T and p_y -> 0, all mass on j: ||J^T g|| = ||J||_F * sqrt 2.
  apply_fn = lambda p, x: jnp.stack([-(x @ p), x @ p, jnp.full(x.shape[:1], -30.0)], axis=1)
  x = 20.0 * w[None] / jnp.sum(w**2)  # logits (-20, 20, -30), label 0
  y = jnp.array([0])
  first = jaxjac.first_order_robust_loss(CE, apply_fn, w, x, y, eps=0.1, p=2)
  surr = jaxjac.jacobian_surrogate_loss(CE, apply_fn, w, x, y, eps=0.1, p=2)
  loss = CE(apply_fn(w, x), y)[0]
  np.testing.assert_allclose((first - loss) / (surr - loss), 1.0, rtol=1e-4)
  # p = inf: only row y of J is non-zero and p_y -> 0: ||J^T g||_1 = ||J||_{1,1}.
  apply_fn = lambda p, x: jnp.stack([x @ p, jnp.full(x.shape[:1], 30.0)], axis=1)
  x = -10.0 * w[None] / jnp.sum(w**2)
  first = jaxjac.first_order_robust_loss(CE, apply_fn, w, x, y, eps=0.1, p=math.inf)
  surr = jaxjac.jacobian_surrogate_loss(CE, apply_fn, w, x, y, eps=0.1, p=math.inf)
  loss = CE(apply_fn(w, x), y)[0]
  np.testing.assert_allclose((first - loss) / (surr - loss), 1.0, rtol=1e-4)


@pytest.mark.parametrize("p", [2, "inf"])
def test_surrogate_gradient_equals_the_hand_written_formula(p):
  """jit + grad of the surrogate against the same loss written out with jnp (float64).

  For p = 2: mean(CE) + eps sqrt(2) mean_b ||J_b||_F with J_b computed in closed form for
  the tanh MLP: J_b = W2^T diag(1 - tanh^2(x_b W1)) W1^T.
  """
  with jax.enable_x64(True):
    apply_fn, params = _random_mlp(jax.random.key(3), 1.0)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.key(4), (8, 10), jnp.float64)
    y = jnp.arange(8) % 5
    eps = 0.1

    def by_hand(pr):
      w1, w2, _ = pr
      s = 1 - jnp.tanh(x @ w1) ** 2  # (B, h)
      jac = jnp.einsum("hc,bh,dh->bcd", w2, s, w1)  # (B, C, d)
      if p == 2:
        reg = math.sqrt(2) * jnp.sqrt(jnp.sum(jac**2, axis=(1, 2)))
      else:
        reg = jnp.sum(jnp.abs(jac), axis=(1, 2))
      return jnp.mean(CE(apply_fn(pr, x), y) + eps * reg)

    fn = jax.jit(lambda pr: jaxjac.jacobian_surrogate_loss(CE, apply_fn, pr, x, y, eps=eps, p=p))
    np.testing.assert_allclose(fn(params), by_hand(params), rtol=1e-10)
    got, want = jax.grad(fn)(params), jax.grad(by_hand)(params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-12)
    assert max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want)) > 1e-2


def _relu_net(x, w, b):
  return jax.nn.relu(x @ w + b[None]) @ jnp.ones((3, 2)) * jnp.array([[1.0, -1.0]])


def test_surrogate_gradient_finite_at_a_dead_relu_example():
  """Example 0 has all ReLUs dead (J_0 = 0, ||J_0||_F = 0): the batch gradient is finite and
  equals the gradient without example 0's norm term (the subgradient 0 at J = 0)."""
  w = jnp.array([[1.0, 0.5, 0.3], [0.2, 1.0, -0.8]])
  b = jnp.array([0.1, 0.2, 0.3])
  x = jnp.array([[-5.0, -1.0], [0.3, -0.2], [0.5, 0.4]])  # x_0 W + b < 0 everywhere
  assert float(jnp.max(x[:1] @ w + b[None])) < 0
  y = jnp.array([0, 1, 0])
  apply_fn = lambda pr, xx: _relu_net(xx, *pr)
  eps = 0.2

  def loss(pr, skip_first_norm):
    values = jaxjac.jacobian_surrogate_loss(CE, apply_fn, pr, x, y, eps=eps, p=2, reduction="none")
    if skip_first_norm:  # the same, without example 0's norm term
      values = jnp.concatenate([CE(apply_fn(pr, x[:1]), y[:1]), values[1:]])
    return jnp.mean(values)

  norms = jaxjac.jacobian_penalty(apply_fn, (w, b), x, reduction="none")
  assert float(norms[0]) == 0.0 and float(jnp.min(norms[1:])) > 0.1
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  got = grad((w, b), False)
  want = grad((w, b), True)
  for g, wt in zip(got, want, strict=True):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, wt, rtol=1e-6, atol=1e-7)
  assert float(jnp.max(jnp.abs(want[0]))) > 1e-2


def test_first_order_gradient_finite_where_the_loss_gradient_vanishes():
  """A confident example with CE gradient exactly 0 (softmax saturates to one-hot in float32):
  ||grad_x l|| = 0, and the batch gradient stays finite and equals the gradient without that
  example's norm term. The real-data version is in test_real_data.py."""
  w = jnp.array([[60.0, -60.0], [0.5, 0.2]])
  x = jnp.array([[2.0, 0.0], [0.1, 0.3]])  # example 0: logits (120, -120)
  y = jnp.array([0, 1])
  apply_fn = lambda pr, xx: xx @ pr
  _, g = jaxjac.input_gradient(CE, apply_fn, w, x, y)
  assert float(jnp.max(jnp.abs(g[0]))) == 0.0  # underflowed exactly
  for p in (2, math.inf):
    full = jax.jit(
      jax.grad(lambda pr: jaxjac.first_order_robust_loss(CE, apply_fn, pr, x, y, eps=0.3, p=p))
    )
    only_ce0 = lambda pr: (
      (
        CE(apply_fn(pr, x[:1]), y[:1])[0]
        + jaxjac.first_order_robust_loss(
          CE, apply_fn, pr, x[1:], y[1:], eps=0.3, p=p, reduction="sum"
        )
      )
      / 2
    )
    got, want = full(w), jax.jit(jax.grad(only_ce0))(w)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(want))) > 1e-2


def test_safe_norm_values_and_gradients():
  from jaxjac._src.surrogates import safe_norm  # noqa: PLC0415

  v = jnp.array([[3.0, -4.0], [0.0, 0.0], [3e-30, 4e-30]])  # the last: squares underflow
  np.testing.assert_allclose(safe_norm(v, 2), [5.0, 0.0, 5e-30], rtol=1e-6)
  grads = jax.vmap(jax.grad(lambda r: safe_norm(r, 2)))(v)
  np.testing.assert_allclose(grads, [[0.6, -0.8], [0.0, 0.0], [0.6, 0.8]], rtol=1e-6)
  np.testing.assert_allclose(safe_norm(v, 1), [7.0, 0.0, 7e-30], rtol=1e-6)
