"""Square attack: linear models with known minimal distances, and zero input gradients.

The linear classifier is a ridge regression fitted on real MNIST digits; its
minimal distances to misclassification inside the box come from the float64
reference of ``test_fab``. The gradient-masked model quantizes its input
through ``stop_gradient`` (input gradient exactly zero): gradient attacks find
nothing, while its exact robust accuracy has a closed form (the logits are
separable monotone functions of the pixels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_fab import _linear_apply, _min_distance, fit_mnist_linear

from jaxjac import attacks
from jaxjac._src.attacks.square import eta_pattern, p_selection, square, window_sides


@pytest.fixture(scope="module")
def mnist_linear():
  return fit_mnist_linear()


@pytest.mark.parametrize("norm,eps", [("linf", 0.09), ("l2", 1.2)])
def test_square_linear_mnist(mnist_linear, norm, eps):
  params, weights, bias, x, y = mnist_linear
  dist = _min_distance(x, y, weights, bias, norm)
  easy = (dist > 0) & (dist < eps / 3)
  assert easy.sum() >= 10
  x_adv = square(
    _linear_apply, params, x, y, eps=eps, norm=norm, key=jax.random.key(0), queries=1000
  )
  x_adv, xn = np.asarray(x_adv), np.asarray(x)
  broken = np.argmax(_linear_apply(params, x_adv), axis=1) != np.asarray(y)
  assert broken[easy].all()
  assert not broken[dist > eps].any()
  # Inside the ball as computed in float32, with the float32 radius the attack uses.
  diff = (x_adv - xn).reshape(len(xn), -1)
  size = np.abs(diff).max(1) if norm == "linf" else np.sqrt(np.sum(diff**2, axis=1))
  assert size.dtype == np.float32 and size.max() <= np.float32(eps)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  # Misclassified at x: left alone; robust: returned unchanged.
  np.testing.assert_array_equal(x_adv[dist == 0], xn[dist == 0])
  np.testing.assert_array_equal(x_adv[~broken], xn[~broken])


def test_square_deterministic_for_a_key(mnist_linear):
  params, _, _, x, y = mnist_linear
  kw = dict(eps=0.05, norm="linf", queries=50)
  a = np.asarray(square(_linear_apply, params, x, y, key=jax.random.key(1), **kw))
  b = np.asarray(square(_linear_apply, params, x, y, key=jax.random.key(1), **kw))
  c = np.asarray(square(_linear_apply, params, x, y, key=jax.random.key(2), **kw))
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)
  # A raw key (`jax.random.PRNGKey`) is the same key: the same draws, the same result.
  raw = np.asarray(square(_linear_apply, params, x, y, key=jax.random.PRNGKey(1), **kw))
  np.testing.assert_array_equal(a, raw)


def _quantized_apply(params, x):
  """The linear model on inputs rounded to multiples of 1/4, with zero input gradient."""
  q = jax.lax.stop_gradient(jnp.round(x * 4.0) / 4.0)
  return _linear_apply(params, q)


def _quantized_robust(x, y, weights, bias, eps):
  """Exact l_inf robustness: per pair (y, k) each pixel goes to the end that lowers z_y - z_k."""
  xf = np.asarray(x, np.float64).reshape(len(x), -1)
  q_lo = np.round(np.clip(xf - eps, 0, 1) * 4) / 4
  q_hi = np.round(np.clip(xf + eps, 0, 1) * 4) / 4
  robust = []
  for b in range(len(xf)):
    yb = int(y[b])
    ok = True
    for k in range(weights.shape[1]):
      if k == yb:
        continue
      a = weights[:, yb] - weights[:, k]
      worst = np.minimum(a * q_lo[b], a * q_hi[b]).sum() + bias[yb] - bias[k]
      ok &= worst > 0
    robust.append(ok)
  return np.array(robust)


def test_square_breaks_a_model_with_zero_input_gradients(mnist_linear):
  params, weights, bias, x, y = mnist_linear
  eps = 0.3
  grad = jax.grad(lambda xa: jnp.sum(_quantized_apply(params, xa)))(x)
  assert float(jnp.max(jnp.abs(grad))) == 0.0
  clean = np.asarray(jnp.argmax(_quantized_apply(params, x), axis=1) == y)
  true_robust = _quantized_robust(x, y, weights, bias, eps)
  assert clean.mean() > 0.75 and true_robust.mean() <= 0.05

  # PGD sees a zero gradient: from x it never moves, from a random start it finds
  # only what uniform noise finds.
  for random_start in (False, True):
    x_pgd = attacks.pgd(
      _quantized_apply,
      params,
      x,
      y,
      eps=eps,
      norm="linf",
      steps=10,
      random_start=random_start,
      key=jax.random.key(0),
    )
    pgd_robust = np.asarray(jnp.argmax(_quantized_apply(params, x_pgd), axis=1) == y)
    if not random_start:
      np.testing.assert_array_equal(pgd_robust, clean)
    assert pgd_robust.mean() >= true_robust.mean() + 0.4

  x_sq = square(
    _quantized_apply, params, x, y, eps=eps, norm="linf", key=jax.random.key(0), queries=300
  )
  sq_robust = np.asarray(jnp.argmax(_quantized_apply(params, x_sq), axis=1) == y)
  assert sq_robust.mean() <= true_robust.mean() + 0.05
  assert np.abs(np.asarray(x_sq) - np.asarray(x)).max() <= np.float32(eps)


def test_schedule_and_patterns_follow_the_reference():
  # p halves after 10, 50, 200, ... of 10000 iterations, rescaled to the budget.
  assert p_selection(0.8, 10, 10000) == 0.8 and p_selection(0.8, 11, 10000) == 0.4
  assert p_selection(0.8, 6, 5000) == 0.4 and p_selection(0.8, 4999, 5000) == 0.8 / 512
  sides = window_sides(5000, 0.8, 28, 28, "linf")  # queries - 1 updates
  assert len(sides) == 4999 and sides[:6] == [25] * 6 and sides[6] == 18 and sides[-1] == 1
  sides = window_sides(5000, 0.8, 28, 28, "l2")
  assert sides[0] == 25 and sides[6] == 19 and sides[-1] == 3
  assert all(s % 2 == 1 for s in sides)
  for s in (3, 4, 7):
    eta = eta_pattern(s)
    np.testing.assert_allclose(np.sum(eta**2), 1.0)
    assert np.all(eta[: s // 2] > 0) and np.all(eta[s // 2 :] < 0)


@pytest.mark.parametrize(
  "override,error,match",
  [
    (dict(x=jnp.full((2, 16), 0.5)), ValueError, r"`x` must be images of shape \(B, H, W, C\)"),
    (dict(p_init=0.0), ValueError, r"`p_init` must lie in \(0, 1\]"),
    (dict(queries=1), ValueError, "`queries` must be >= 2"),
    (dict(key=0), TypeError, r"`key` must be a PRNG key, got the integer 0"),
    (dict(eps=-1.0), ValueError, "`eps` must be a finite number >= 0"),
    (dict(norm="l1"), ValueError, "`norm` must be one of"),
    (dict(norm="l2", x=jnp.full((2, 4, 4, 1), 0.5)), ValueError, "at least 5 x 5 pixels"),
    (dict(y=jnp.array([0, 9], jnp.int32)), ValueError, r"`y` must lie in \[0, 3\)"),
    (dict(x=jnp.full((2, 8, 8, 1), -0.5)), ValueError, "`x` must lie in the box"),
  ],
)
def test_square_errors(override, error, match):
  params = (jnp.ones((64, 3)), jnp.zeros(3))
  kw = dict(
    x=jnp.full((2, 8, 8, 1), 0.5),
    y=jnp.array([0, 1], jnp.int32),
    eps=0.1,
    norm="linf",
    key=jax.random.key(0),
  )
  kw.update(override)
  if kw["x"].ndim == 2:
    params = (jnp.ones((16, 3)), jnp.zeros(3))
  elif kw["x"].shape[1] == 4:
    params = (jnp.ones((16, 3)), jnp.zeros(3))
  with pytest.raises(error, match=match):
    square(_linear_apply, params, kw.pop("x"), kw.pop("y"), **kw)
