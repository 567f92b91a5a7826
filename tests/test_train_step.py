"""The train step against independent references: every regularizer, the NaN guard,
the pluggable and robust data terms (Wu and Li's training reproduced), sub-batch JR
(unbiased, CE untouched) and lazy JR (weight k every k steps, one compilation)."""

import importlib.util
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO_ROOT, tol

import jaxjac
from jaxjac import attacks, models, training
from jaxjac._src.training import step as step_lib


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


# ----------------------------------------------------------------------------- one step

LR = 0.05
CASES = {
  "jr_projection": (
    training.Regularizer(jr_lambda=0.1, jr_estimator="projection", jr_num_projections=2),
    0.0,
  ),
  "jr_l11_jvp": (training.Regularizer(jr_lambda=0.1, jr_norm="l11", jr_estimator="jvp"), 0.0),
  "dropout_jr_exact": (training.Regularizer(jr_lambda=0.1, jr_estimator="exact"), 0.5),
  "wd_igr": (training.Regularizer(weight_decay=0.01, igr_lambda=3.0), 0.0),
  "at_linf_jr": (
    training.Regularizer(
      at_norm="linf", at_eps=0.1, at_steps=3, at_weight=0.5, jr_lambda=0.1, jr_estimator="exact"
    ),
    0.0,
  ),
}


def _dense_jacobian_diag(f, x):
  """Per-example Jacobians (B, C, d): diagonal blocks of the dense batched Jacobian."""
  b = x.shape[0]
  full = jax.jacrev(lambda xf: f(xf.reshape(x.shape)))(x.reshape(b, -1))  # (B, C, B, d)
  return full[jnp.arange(b), :, jnp.arange(b), :]


def _reference(model, params, x, y, key, reg):
  """The objective of one step, written independently of the library where possible."""
  k_dropout, k_jr, k_at = training.step_keys(key, 0)
  apply_t = lambda v, xb: model.apply(v, xb, train=True, rngs={"dropout": k_dropout})
  x_adv = None
  if reg.at_norm != "none":
    x_adv = attacks.pgd(
      model.apply,
      {"params": params},
      x,
      y,
      eps=reg.at_eps,
      norm=reg.at_norm,
      steps=reg.at_steps,
      key=k_at,
      select="loss",
    )

  def objective(p):
    v = {"params": p}
    f = lambda xb: apply_t(v, xb)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(x), y))
    terms = {"ce": ce}
    loss = ce
    if x_adv is not None:
      terms["adv_ce"] = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(x_adv), y))
      loss = (1 - reg.at_weight) * ce + reg.at_weight * terms["adv_ce"]
    if reg.jr_lambda:
      if reg.jr_estimator == "exact" and reg.jr_norm == "frobenius":
        penalty = jnp.mean(jnp.sum(jnp.square(_dense_jacobian_diag(f, x)), axis=(1, 2)))
      else:  # random estimators: the library's function with the step's key
        penalty = jaxjac.jacobian_penalty(
          apply_t,
          v,
          x,
          key=k_jr,
          norm=reg.jr_norm,
          estimator=reg.jr_estimator,
          num_projections=reg.jr_num_projections,
        )
      terms["penalty"] = penalty
      loss = loss + reg.jr_lambda / 2 * penalty
    if reg.igr_lambda:
      per_ex = lambda xb: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(f(xb), y))
      g = jax.grad(per_ex)(x).reshape(x.shape[0], -1)
      terms["igr"] = jnp.mean(jnp.sum(g * g, axis=1))
      loss = loss + reg.igr_lambda / 2 * terms["igr"]
    if reg.weight_decay:
      terms["l2"] = 0.5 * reg.weight_decay * sum(jnp.sum(a * a) for a in jax.tree.leaves(p))
      loss = loss + terms["l2"]
    return loss, terms

  (loss, terms), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
  return loss, terms, grads


def _tiny_state(dropout_rate, x):
  model = models.MLP(features=(16,), dropout_rate=dropout_rate)
  params = jax.jit(model.init)(jax.random.key(1), x)["params"]
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=LR, momentum=0.9)
  return model, training.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_matches_reference(case, mnist5k):
  """Loss, every reported term, and the SGD update -lr * grad of the reference objective.

  The first momentum-SGD update is ``-lr * g``. Float32 throughout; values to
  1e-5 relative, parameters to 1e-6 absolute.
  """
  reg, dropout_rate = CASES[case]
  x, y = jnp.asarray(mnist5k.train_images[:8]), jnp.asarray(mnist5k.train_labels[:8])
  model, state = _tiny_state(dropout_rate, x)
  key = jax.random.key(42)
  params0 = _copy(state.params)
  ref_loss, ref_terms, ref_grads = _reference(model, params0, x, y, key, reg)

  new_state, metrics = training.make_train_step(reg)(state, (x, y), key)
  expected = {"loss", "ce", "accuracy", "grad_norm", "lr", *ref_terms}
  if reg.at_norm != "none":
    expected.add("adv_accuracy")
  assert set(metrics) == expected
  np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=tol(1e-5))
  for name, value in ref_terms.items():
    np.testing.assert_allclose(metrics[name], value, rtol=tol(1e-5), err_msg=name)
  if reg.weight_decay:  # L2 term = 0.5 * wd * ||params||^2, in float64
    sq = sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree.leaves(params0))
    np.testing.assert_allclose(metrics["l2"], 0.5 * reg.weight_decay * sq, rtol=tol(1e-5))
  np.testing.assert_allclose(metrics["lr"], LR, rtol=1e-7)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(ref_grads), rtol=tol(1e-5))
  expected_params = jax.tree.map(lambda p, g: p - LR * g, params0, ref_grads)
  for got, want in zip(
    jax.tree.leaves(new_state.params), jax.tree.leaves(expected_params), strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=0, atol=tol(1e-6))
  assert int(new_state.step) == 1

  if reg.jr_lambda and reg.jr_estimator == "projection":
    # Step 1 draws its projections from step_keys(key, 1)[1]; one compilation.
    step = training.make_train_step(reg)
    params1 = _copy(new_state.params)
    penalty = jax.jit(
      lambda p, k: jaxjac.jacobian_penalty(
        model.apply, {"params": p}, x, key=k, estimator="projection", num_projections=2
      )
    )
    want, stale = (
      penalty(params1, training.step_keys(key, 1)[1]),
      penalty(params1, training.step_keys(key, 0)[1]),
    )
    _, metrics1 = step(new_state, (x, y), key)
    np.testing.assert_allclose(metrics1["penalty"], want, rtol=tol(1e-6))
    assert abs(float(stale) - float(want)) > 1e-4 * float(want)  # the key matters
    assert step._cache_size() == 1


def test_nan_guard_names_metric_and_step(mnist5k, tmp_path):
  x, y = jnp.asarray(mnist5k.train_images[:8]), jnp.asarray(mnist5k.train_labels[:8])
  _, state = _tiny_state(0.0, x)
  params = state.params
  params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[3].set(jnp.nan)
  state = state.replace(params=params)
  _, metrics = training.make_train_step(training.Regularizer())(state, (x, y), jax.random.key(0))
  with pytest.raises(FloatingPointError, match=r"'loss' = nan at step 7"):
    training.check_finite(jax.device_get(metrics), step=7)
  training.check_finite({"loss": 1.0, "lr": np.float32(0.1)}, step=1)  # finite: no error
  with pytest.raises(FloatingPointError, match=r"'penalty' = inf at step 2"):
    training.check_finite({"loss": 1.0, "penalty": np.float32(np.inf)}, step=2)

  # End to end: one NaN pixel in every training image stops the run at step 1.
  config = training.tiny(training.default_config())
  bad = mnist5k.train_images.copy()
  bad[:, 0, 0, 0] = np.nan
  with pytest.raises(FloatingPointError, match=r"'loss' = nan at step 1\b"):
    training.train(config, str(tmp_path / "nan"), dataset=mnist5k._replace(train_images=bad))


# ----------------------------------------------------------------------------- data term


def _batch(mnist5k, n=8):
  return jnp.asarray(mnist5k.train_images[:n]), jnp.asarray(mnist5k.train_labels[:n])


def _first_update(step, state, batch, key):
  """Parameters after one step from a fresh momentum-SGD state (``-lr * grad``)."""
  new_state, metrics = step(_copy(state), batch, key)
  return new_state.params, metrics


def _assert_trees_close(a, b, atol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, rtol=0, atol=atol)


def test_custom_loss_fn_replaces_the_cross_entropy(mnist5k):
  """``loss_fn`` = 0.5 * CE, with exact JR on top: the update is ``-lr`` times the
  gradient of ``0.5 ce + (lambda / 2) mean ||J||_F^2`` computed independently."""
  x, y = _batch(mnist5k)
  model, state = _tiny_state(0.0, x)
  reg = training.Regularizer(jr_lambda=0.1, jr_estimator="exact")
  keys = []

  def half_ce(logits_fn, params, xb, yb, key):
    keys.append(key)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, xb), yb))
    return 0.5 * ce, {"half_ce": 0.5 * ce}

  params, metrics = _first_update(
    training.make_train_step(reg, loss_fn=half_ce), state, (x, y), jax.random.key(3)
  )
  assert set(metrics) == {"loss", "data_loss", "half_ce", "penalty", "grad_norm", "lr"}

  def objective(p):
    f = lambda xb: model.apply({"params": p}, xb)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(x), y))
    pen = jnp.mean(jnp.sum(jnp.square(_dense_jacobian_diag(f, x)), axis=(1, 2)))
    return 0.5 * ce + 0.05 * pen

  loss, grads = jax.value_and_grad(objective)(state.params)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=tol(1e-5))
  _assert_trees_close(params, jax.tree.map(lambda p, g: p - LR * g, state.params, grads), tol(1e-6))
  assert keys and keys[0].dtype == jax.random.key(0).dtype


def test_loss_fn_errors(mnist5k):
  x, y = _batch(mnist5k)
  _, state = _tiny_state(0.0, x)
  key = jax.random.key(0)
  bad = lambda f, p, xb, yb, k: jnp.mean(f(p, xb))
  with pytest.raises(TypeError, match=r"`loss_fn` must return \(scalar loss, dict"):
    training.make_train_step(training.Regularizer(), loss_fn=bad)(_copy(state), (x, y), key)
  clash = lambda f, p, xb, yb, k: (jnp.mean(f(p, xb)), {"penalty": 0.0})
  with pytest.raises(ValueError, match=r"\['penalty'\] clash"):
    training.make_train_step(training.Regularizer(), loss_fn=clash)(_copy(state), (x, y), key)
  config = training.default_config()
  config.loss.name = "surrogate"
  with pytest.raises(ValueError, match="either `loss_fn` or `config.loss.name`"):
    training.make_train_step(config, loss_fn=clash)
  with pytest.raises(TypeError, match="`loss_fn` must be callable"):
    training.make_train_step(training.Regularizer(), loss_fn="ce")


def _wu_li_config(norm):
  path = os.path.join(REPO_ROOT, "experiments", "configs", "wu_li.py")
  spec = importlib.util.spec_from_file_location("wu_li_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(f"{norm},0")


@pytest.mark.parametrize(("norm", "eps", "p"), [("frobenius", 1.0, 2.0), ("l11", 0.1, math.inf)])
def test_surrogate_loss_reproduces_wu_li_training(norm, eps, p, mnist5k):
  """``config.loss = surrogate`` on Wu and Li's config trains exactly what
  experiments/wu_li.py's former step trained: Adam on ``jacobian_surrogate_loss`` (exact
  Jacobians) of the evaluation-mode network. Three steps, parameters to 1e-6."""
  config = _wu_li_config(norm)
  config.model.features = (16,)
  config.loss.name, config.loss.eps, config.loss.p = "surrogate", eps, p
  x, y = _batch(mnist5k, 16)
  state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=20)

  @jax.jit
  # The step experiments/wu_li.py ran before it trained through the library.
  def wu_li_step(s, xb, yb):
    objective = lambda params: jaxjac.jacobian_surrogate_loss(
      jaxjac.softmax_cross_entropy, s.apply_fn, {"params": params}, xb, yb, eps=eps, p=p
    )
    loss, grads = jax.value_and_grad(objective)(s.params)
    return s.apply_gradients(grads=grads), loss

  step = training.make_train_step(config)
  ours, ref = _copy(state), state
  for i in range(3):
    xb, yb = x[4 * i : 4 * i + 8], y[4 * i : 4 * i + 8]
    ours, metrics = step(ours, (xb, yb), jax.random.key(1))
    ref, ref_loss = wu_li_step(ref, xb, yb)
    np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=tol(1e-6))
    np.testing.assert_allclose(metrics["surrogate"], ref_loss, rtol=tol(1e-6))
    assert metrics["surrogate"] > metrics["ce"]  # eps K_p N_p(J) > 0
  _assert_trees_close(ours.params, ref.params, tol(1e-6))


def test_first_order_loss_value(mnist5k):
  config = training.default_config()
  config.model = training.tiny(config).model
  config.loss.name, config.loss.eps, config.loss.p = "first_order", 0.3, 2.0
  x, y = _batch(mnist5k)
  state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=10)
  want = jaxjac.first_order_robust_loss(
    jaxjac.softmax_cross_entropy, state.apply_fn, {"params": state.params}, x, y, eps=0.3, p=2
  )
  _, metrics = training.make_train_step(config)(_copy(state), (x, y), jax.random.key(0))
  np.testing.assert_allclose(metrics["first_order"], want, rtol=tol(1e-6))
  np.testing.assert_allclose(metrics["loss"], want, rtol=tol(1e-6))


# ----------------------------------------------------------------------------- amortized JR


def test_sub_batch_jr_penalizes_the_drawn_subset_and_leaves_ce_alone(mnist5k):
  """jr_fraction = 0.5 of B = 8: the penalty is the exact mean ||J_b||_F^2 over the 4
  examples drawn from the step's JR key; the CE term and its gradient are the full
  batch's. The update is -lr times the gradient of that objective."""
  x, y = _batch(mnist5k)
  model, state = _tiny_state(0.0, x)
  key = jax.random.key(5)
  reg = training.Regularizer(jr_lambda=0.2, jr_estimator="exact", jr_fraction=0.5)
  params, metrics = _first_update(training.make_train_step(reg), state, (x, y), key)
  k_jr = training.step_keys(key, 0)[1]
  idx = jax.random.choice(jax.random.fold_in(k_jr, 2), 8, (4,), replace=False)
  assert len(set(np.asarray(idx).tolist())) == 4

  def objective(p):
    f = lambda xb: model.apply({"params": p}, xb)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f(x), y))
    pen = jnp.mean(jnp.sum(jnp.square(_dense_jacobian_diag(f, x[idx])), axis=(1, 2)))
    return ce + 0.1 * pen, (ce, pen)

  (_, (ce, pen)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  np.testing.assert_allclose(metrics["ce"], ce, rtol=tol(1e-6))
  np.testing.assert_allclose(metrics["penalty"], pen, rtol=tol(1e-5))
  _assert_trees_close(params, jax.tree.map(lambda p, g: p - LR * g, state.params, grads), tol(1e-6))
  _, full = _first_update(
    training.make_train_step(reg._replace(jr_fraction=1.0)), state, (x, y), key
  )
  assert full["ce"] == metrics["ce"] and full["penalty"] != metrics["penalty"]


@pytest.mark.probabilistic
def test_sub_batch_jr_is_unbiased(mnist5k):
  """Over 4000 keys the mean of the 2-of-8 sub-batch penalty is the full batch's exact
  penalty within 4 standard errors (key 0); the spread is real (not a constant)."""
  x, _ = _batch(mnist5k)
  model, state = _tiny_state(0.0, x)
  variables = {"params": state.params}
  reg = training.Regularizer(jr_lambda=1.0, jr_estimator="exact", jr_fraction=0.25)
  estimate = jax.jit(jax.vmap(lambda k: step_lib._jr_estimate(reg, model.apply, variables, x, k)))
  values = np.asarray(estimate(jax.random.split(jax.random.key(0), 4000)), np.float64)
  full = float(jaxjac.jacobian_penalty(model.apply, variables, x, estimator="exact"))
  se = values.std() / np.sqrt(len(values))
  assert values.std() > 0.05 * full
  assert abs(values.mean() - full) < 4 * se, (values.mean(), full, se)
  one = step_lib._jr_estimate(
    reg._replace(jr_fraction=1.0), model.apply, variables, x, jax.random.key(1)
  )
  np.testing.assert_allclose(one, full, rtol=1e-6)


def test_lazy_jr_weights_k_every_k_steps_without_recompiling(mnist5k):
  """jr_every = 3: step s's update equals the full-JR step with weight 3 lambda when
  s % 3 == 0 and the plain step otherwise (same keys); two programs chosen on the host,
  each traced and compiled once."""
  x, y = _batch(mnist5k)
  _, state = _tiny_state(0.0, x)
  key = jax.random.key(7)
  reg = training.Regularizer(jr_lambda=0.1, jr_estimator="projection", jr_every=3)
  lazy = training.make_train_step(reg)

  def lazy_step(state, batch, key, jr_on):
    return step_lib._train_step(
      state,
      batch,
      key,
      reg=reg,
      loss_fn=step_lib.cross_entropy_loss,
      custom_loss=False,
      jr_on=jr_on,
    )

  traced = jax.jit(chex.assert_max_traces(lazy_step, n=2), static_argnums=3)
  weighted = training.make_train_step(reg._replace(jr_every=1, jr_lambda=0.3))
  plain = training.make_train_step(reg._replace(jr_lambda=0.0))
  full_penalty = training.make_train_step(reg._replace(jr_every=1))
  for s in range(7):
    at_s = state.replace(step=jnp.asarray(s, jnp.int32))
    params, metrics = _first_update(lazy, at_s, (x, y), key)
    traced(_copy(at_s), (x, y), key, s % 3 == 0)
    active = s % 3 == 0
    want, _ = _first_update(weighted if active else plain, at_s, (x, y), key)
    _assert_trees_close(params, want, tol(1e-7))
    _, ref = _first_update(full_penalty, at_s, (x, y), key)
    np.testing.assert_allclose(metrics["penalty"], 3 * ref["penalty"] if active else 0.0, rtol=1e-6)
    np.testing.assert_allclose(
      metrics["loss"], metrics["ce"] + 0.05 * metrics["penalty"], rtol=1e-6
    )
  assert isinstance(lazy, training.LazyTrainStep)
  assert lazy.on._cache_size() == lazy.off._cache_size() == 1  # two programs, no recompiles


def test_amortized_jr_config_errors():
  for field, value, match in [
    ("jr_fraction", 0.0, r"`config.reg.jr_fraction` must be in \(0, 1\]"),
    ("jr_fraction", 1.5, r"`config.reg.jr_fraction` must be in \(0, 1\]"),
    ("jr_every", 0, r"`config.reg.jr_every` must be >= 1"),
  ]:
    with pytest.raises(ValueError, match=match):
      training.regularizer_from_config({field: value})
  with pytest.raises(TypeError, match="config.reg.jr_every"):
    training.regularizer_from_config({"jr_every": 2.0})
  with pytest.raises(ValueError, match="config.loss.name"):
    training.loss_from_config({"name": "hinge"})
  with pytest.raises(ValueError, match=r"`config.loss.p` must be 2.0 or inf, got 3"):
    training.loss_from_config({"name": "surrogate", "p": 3})
  with pytest.raises(ValueError, match="config.loss.eps"):
    training.loss_from_config({"name": "surrogate", "eps": -0.1})
  assert training.loss_from_config({"p": "inf"}).p == math.inf
  config = training.default_config()
  assert (config.reg.jr_fraction, config.reg.jr_every, config.loss.name) == (1.0, 1, "ce")
