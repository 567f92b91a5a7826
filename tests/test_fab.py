"""FAB-T against closed forms: the projection, and minimal distances of linear models.

For a linear classifier the set of misclassified points is the union over
``k != y`` of the half-spaces ``{z_k >= z_y}``, so the minimal ``l_p`` distance
to it is the smallest distance to one of them. Without the box (points far
from its faces) that is ``(z_y - z_k) / ||w_y - w_k||_q`` with ``q`` the dual
norm; with the box (real MNIST: saturated pixels) it is computed here by an
independent float64 bisection on the KKT parametrization.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_MNIST

from jaxjac._src.attacks.fab import fab, project_hyperplane_box

FAB_FACTOR = 1.01  # FAB-T's adversarials are within 1% of the minimal distance


def _norm(v, norm):
  v = np.asarray(v, np.float64).reshape(len(v), -1)
  return np.abs(v).max(1) if norm == "linf" else np.sqrt((v**2).sum(1))


def _box_step(p, a, c, norm):
  """float64 reference: argmin ||d||_p, c + <a, d> = 0, 0 <= p + d <= 1 (or the corner)."""
  s = 1.0 if c >= 0 else -1.0
  a, c = a * s, c * s
  room = np.where(a > 0, p, 1 - p)
  speed = np.ones_like(a) if norm == "linf" else np.abs(a)

  def decrease(r):
    return np.sum(np.abs(a) * np.minimum(r * speed, room))

  if decrease(1e12) < c:
    return np.where(a != 0, -np.sign(a) * room, 0.0)
  lo, hi = 0.0, 1e6
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if decrease(mid) < c else (lo, mid)
  return np.where(a != 0, -np.sign(a) * np.minimum(hi * speed, room), 0.0)


def _min_distance(x, y, weights, bias, norm):
  """Minimal distance in the box [0, 1] to misclassification by ``x @ weights + bias``."""
  xf = np.asarray(x, np.float64).reshape(len(x), -1)
  out = []
  for xb, yb in zip(xf, np.asarray(y), strict=True):
    z = xb @ weights + bias
    dists = []
    for k in range(weights.shape[1]):
      if k != yb:
        c = z[yb] - z[k]
        d = _box_step(xb, weights[:, yb] - weights[:, k], c, norm) if c > 0 else 0 * xb
        dists.append(_norm(d[None], norm)[0])
    out.append(min(dists))
  return np.array(out)


def _linear_apply(params, x):
  weights, bias = params
  return x.reshape(x.shape[0], -1) @ weights + bias[None, :]


def fit_mnist_linear():
  """A ridge-regression linear classifier fitted on 5000 real MNIST digits, 48 test digits."""
  from jaxjac import data

  path = os.environ.get("JAXJAC_DATA_DIR", SHARED_MNIST)
  if not os.path.isdir(path):
    pytest.skip(f"no MNIST IDX directory at {path}")
  ds = data.load_idx_dir(path)
  xtr = ds.train_images[:5000].reshape(5000, -1).astype(np.float64)
  a = np.concatenate([xtr, np.ones((5000, 1))], axis=1)
  t = 2.0 * np.eye(10)[ds.train_labels[:5000]] - 1.0
  sol = np.linalg.solve(a.T @ a + 10.0 * np.eye(785), a.T @ t)
  weights, bias = sol[:-1], sol[-1]
  params = (jnp.asarray(weights, jnp.float32), jnp.asarray(bias, jnp.float32))
  x, y = jnp.asarray(ds.test_images[:48]), jnp.asarray(ds.test_labels[:48])
  return params, weights, bias, x, y


@pytest.fixture(scope="module")
def mnist_linear():
  return fit_mnist_linear()


# ----------------------------------------------------------------------------
# The projection on a hyperplane intersected with the box.


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_reference(norm):
  rng = np.random.default_rng(0)
  b, n = 64, 40
  p = rng.uniform(0, 1, (b, n)).astype(np.float32)
  p[:, :4] = 0.0  # points on the box faces (saturated pixels)
  p[:, 4:8] = 1.0
  w = rng.normal(size=(b, n)).astype(np.float32)
  w[:, 8:12] = 0.0  # coordinates the hyperplane ignores
  c = (rng.normal(size=b) * np.linspace(0.01, 12, b)).astype(np.float32)  # some infeasible
  d = np.asarray(project_hyperplane_box(p, w, c, norm=norm, bounds=(0.0, 1.0)))
  ref = np.stack([_box_step(p[i].astype(np.float64), w[i], c[i], norm) for i in range(b)])
  np.testing.assert_allclose(d, ref, atol=2e-6)
  assert np.all(p + d >= -1e-6) and np.all(p + d <= 1 + 1e-6)
  assert np.all(d[:, 8:12] == 0)
  feasible = np.array(
    [
      np.sum(np.abs(w[i]) * np.where(w[i] * c[i] > 0, p[i], 1 - p[i])) >= abs(c[i])
      for i in range(b)
    ]
  )
  assert 0 < feasible.sum() < b  # both cases are exercised
  residual = np.abs(c + np.sum(w.astype(np.float64) * d, axis=1))
  assert np.all(residual[feasible] < 1e-4 * np.maximum(1, np.abs(c[feasible])))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_without_box_is_the_dual_norm_formula(norm):
  rng = np.random.default_rng(1)
  p = rng.uniform(0.4, 0.6, (16, 30)).astype(np.float32)
  w = rng.normal(size=(16, 30)).astype(np.float32)
  c = rng.uniform(-0.5, 0.5, 16).astype(np.float32)
  d = np.asarray(project_hyperplane_box(p, w, c, norm=norm, bounds=(0.0, 1.0)))
  if norm == "l2":  # d = -c w / ||w||_2^2
    ref = -c[:, None] * w / np.sum(w**2, axis=1, keepdims=True)
  else:  # d = -c sign(w) / ||w||_1
    ref = -c[:, None] * np.sign(w) / np.sum(np.abs(w), axis=1, keepdims=True)
  assert np.abs(ref).max() < 0.4  # the box is inactive
  np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------
# FAB-T on linear models.


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_linear_interior_closed_form(norm):
  # Points in [0.3, 0.7]^64 and a 4-class linear model whose minimal distances
  # are below 0.3: the box is inactive, dist = min_k (z_y - z_k) / ||w_y - w_k||_q.
  rng = np.random.default_rng(2)
  x = rng.uniform(0.3, 0.7, (32, 8, 8, 1)).astype(np.float32)
  weights = rng.normal(size=(64, 4)).astype(np.float32)
  bias = rng.normal(size=4).astype(np.float32)
  z = x.reshape(32, -1).astype(np.float64) @ weights + bias
  y = np.argmax(z, axis=1).astype(np.int32)  # every example correctly classified
  q = 1 if norm == "linf" else 2
  dist = np.array(
    [
      min(
        (z[b, y[b]] - z[b, k]) / np.linalg.norm(weights[:, y[b]] - weights[:, k], ord=q)
        for k in range(4)
        if k != y[b]
      )
      for b in range(32)
    ]
  )
  if norm == "l2":
    dist_scale = 0.3 / dist.max()  # shrink the weights' effect: distances below 0.3
  else:
    dist_scale = 0.1 / dist.max()
  # x' = 0.5 + a (x - 0.5) and b' = a b - (1 - a) 0.5 sum_i w_i give z(x') = a z(x):
  # same labels, every distance times a.
  x = (0.5 + (x - 0.5) * dist_scale).astype(np.float32)
  bias = (dist_scale * bias - (1 - dist_scale) * 0.5 * weights.sum(0)).astype(np.float32)
  dist = dist * dist_scale
  params = (jnp.asarray(weights), jnp.asarray(bias))
  np.testing.assert_array_equal(np.argmax(_linear_apply(params, x), axis=1), y)

  x_adv = fab(
    _linear_apply,
    params,
    jnp.asarray(x),
    jnp.asarray(y),
    eps=10.0,
    norm=norm,
    key=jax.random.key(0),
    steps=20,
    num_targets=3,
  )
  pred = np.argmax(_linear_apply(params, x_adv), axis=1)
  size = _norm(np.asarray(x_adv) - x, norm)
  assert np.all(pred != y)
  assert np.all(size >= dist * (1 - 1e-4))
  assert np.all(size <= dist * FAB_FACTOR), np.max(size / dist)

  # eps between the distances: exactly the examples with dist < eps are broken.
  eps = float(np.median(dist))
  x_adv = fab(
    _linear_apply,
    params,
    jnp.asarray(x),
    jnp.asarray(y),
    eps=eps,
    norm=norm,
    key=jax.random.key(0),
    steps=20,
    num_targets=3,
  )
  broken = np.argmax(_linear_apply(params, x_adv), axis=1) != y
  np.testing.assert_array_equal(np.asarray(x_adv)[dist > eps], x[dist > eps])
  assert not broken[dist > eps].any()
  assert broken[dist * FAB_FACTOR < eps].all()
  assert np.all(_norm(np.asarray(x_adv) - x, norm) <= eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_real_mnist_linear_with_box(mnist_linear, norm):
  # Real digits have pixels at exactly 0 and 1: the box constraint is active.
  params, weights, bias, x, y = mnist_linear
  correct = np.asarray(jnp.argmax(_linear_apply(params, x), axis=1) == y)
  assert 0.75 < correct.mean() < 1.0  # misclassified digits are in the batch
  dist = _min_distance(x, y, weights, bias, norm)
  x_adv = fab(_linear_apply, params, x, y, eps=100.0, norm=norm, key=jax.random.key(0), steps=20)
  x_adv = np.asarray(x_adv)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  np.testing.assert_array_equal(x_adv[~correct], np.asarray(x)[~correct])
  pred = np.argmax(_linear_apply(params, x_adv), axis=1)
  assert np.all(pred[correct] != np.asarray(y)[correct])
  size = _norm(x_adv - np.asarray(x), norm)[correct]
  ratio = size / dist[correct]
  assert ratio.min() >= 1 - 1e-4
  assert ratio.max() <= FAB_FACTOR, ratio.max()
  # The box matters: for some digits the unconstrained distance (dual norm) is shorter.
  q = 1 if norm == "linf" else 2
  xf = np.asarray(x, np.float64).reshape(len(x), -1)
  free = np.array(
    [
      min(
        ((xb @ weights + bias)[yb] - (xb @ weights + bias)[k])
        / np.linalg.norm(weights[:, yb] - weights[:, k], ord=q)
        for k in range(10)
        if k != yb
      )
      for xb, yb in zip(xf, np.asarray(y), strict=True)
    ]
  )
  assert np.all(dist[correct] >= free[correct] * (1 - 1e-6))
  assert np.any(dist[correct] > free[correct] * 1.05)


def test_fab_restarts_never_worse_and_deterministic(mnist_linear):
  params, _, _, x, y = mnist_linear
  kw = dict(eps=100.0, norm="l2", key=jax.random.key(3), steps=3, num_targets=2)
  one = np.asarray(fab(_linear_apply, params, x, y, **kw))
  again = np.asarray(fab(_linear_apply, params, x, y, **kw))
  np.testing.assert_array_equal(one, again)
  # A raw key (`jax.random.PRNGKey`) is the same key: the same draws, the same result.
  raw = np.asarray(fab(_linear_apply, params, x, y, **(kw | {"key": jax.random.PRNGKey(3)})))
  np.testing.assert_array_equal(one, raw)
  three = np.asarray(fab(_linear_apply, params, x, y, restarts=3, **kw))
  n1, n3 = _norm(one - np.asarray(x), "l2"), _norm(three - np.asarray(x), "l2")
  broken1 = n1 > 0
  # Restart 0 is the run of restarts=1; the others can only shorten the perturbation.
  assert np.all(n3[broken1] <= n1[broken1] + 1e-6)


# ----------------------------------------------------------------------------
# Input validation.


def _tiny():
  params = (jnp.ones((4, 3)), jnp.zeros(3))
  x = jnp.full((2, 2, 2, 1), 0.5)
  y = jnp.array([0, 1], jnp.int32)
  return params, x, y


@pytest.mark.parametrize(
  "override,error,match",
  [
    (dict(eps=-0.1), ValueError, "`eps` must be a finite number >= 0"),
    (dict(eps=float("nan")), ValueError, "`eps` must be a finite number >= 0"),
    (dict(eps=float("inf")), ValueError, "`eps` must be a finite number >= 0"),
    (dict(norm="l1"), ValueError, "`norm` must be one of"),
    (dict(key=None), ValueError, "`key` is required"),
    (dict(key=jax.random.split(jax.random.key(0), 2)), ValueError, "a single PRNG key"),
    (dict(steps=0), ValueError, "`steps` must be >= 1"),
    (dict(restarts=1.5), TypeError, "`restarts` must be a Python int"),
    (dict(num_targets=3), ValueError, "`num_targets` must be at most C - 1 = 2"),
    (dict(bounds=(0.0, float("inf"))), ValueError, "`bounds` must be finite"),
    (dict(y=jnp.array([0, 3], jnp.int32)), ValueError, r"`y` must lie in \[0, 3\)"),
    (dict(y=jnp.array([0.0, 1.0])), TypeError, "`y` must be an integer array"),
    (dict(x=jnp.full((2, 2, 2, 1), 1.5)), ValueError, "`x` must lie in the box"),
    (dict(x=jnp.ones((2, 2, 2, 1), jnp.int32)), TypeError, "`x` must have a floating-point"),
  ],
)
def test_fab_errors(override, error, match):
  params, x, y = _tiny()
  kw = dict(x=x, y=y, eps=0.1, norm="linf", key=jax.random.key(0), num_targets=2)
  kw.update(override)
  with pytest.raises(error, match=match):
    fab(_linear_apply, params, kw.pop("x"), kw.pop("y"), **kw)
