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
  losses, grads = jaxjac.input_gradient(CE, apply_fn, params, x, y)
  single = lambda xi, yi: CE(apply_fn(params, xi[None]), yi[None])[0]
  ref_grads = jax.vmap(jax.grad(single))(x, y)
  np.testing.assert_allclose(grads, ref_grads, rtol=tol(1e-5), atol=tol(1e-6))
  np.testing.assert_allclose(losses, jax.vmap(single)(x, y), rtol=tol(1e-6))
  for p, q in ((2, 2), (math.inf, 1)):
    want = losses + 0.3 * np.linalg.norm(np.asarray(ref_grads), ord=q, axis=1)
    got = jaxjac.first_order_robust_loss(CE, apply_fn, params, x, y, eps=0.3, p=p, reduction="none")
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


def test_surrogate_is_differentiable_and_jits():
  apply_fn, params = _random_mlp(jax.random.key(3), 1.0)
  x = jax.random.normal(jax.random.key(4), (8, 10))
  y = jnp.arange(8) % 5
  for p in (2, "inf"):
    fn = jax.jit(lambda pr: jaxjac.jacobian_surrogate_loss(CE, apply_fn, pr, x, y, eps=0.1, p=p))
    grads = jax.grad(fn)(params)
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(grads))
