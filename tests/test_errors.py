"""Every documented bad input raises an error that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxjac

W = jnp.ones((4, 3))
X = jnp.ones((2, 4))
Y = jnp.zeros((2,), jnp.int32)
APPLY = lambda p, x: x @ p
CE = jaxjac.softmax_cross_entropy


@pytest.mark.parametrize(
  "kwargs,error,match",
  [
    ({"norm": "nuclear"}, ValueError, "`norm`"),
    ({"estimator": "hutch"}, ValueError, "`estimator`"),
    ({"method": "magic"}, ValueError, "`method`"),
    ({"estimator": "projection"}, ValueError, "`key`"),
    ({"estimator": "jvp"}, ValueError, "`key`"),
    (
      {"estimator": "projection", "key": jax.random.key(0), "num_projections": 0},
      ValueError,
      "`num_projections`",
    ),
    (
      {"estimator": "projection", "key": jax.random.key(0), "num_projections": 1.5},
      TypeError,
      "`num_projections`",
    ),
    (
      {"norm": "spectral", "estimator": "projection", "key": jax.random.key(0)},
      ValueError,
      "`estimator`",
    ),
    ({"norm": "spectral", "iterations": 0}, ValueError, "`iterations`"),
    ({"reduction": "median"}, ValueError, "`reduction`"),
    ({"estimator": "projection", "key": 0}, TypeError, r"`key`.*integer.*jax\.random\.key\(0\)"),
    ({"estimator": "jvp", "key": jnp.uint32(3)}, TypeError, r"`key`.*jax\.random\.key"),
    ({"estimator": "projection", "key": 1.5}, TypeError, r"`key`.*jax\.random\.key"),
    (
      {"estimator": "projection", "key": jax.random.split(jax.random.key(0), 4)},
      ValueError,
      r"`key`.*batch of keys of shape \(4,\).*jax\.random\.split.*keys\[i\]",
    ),
    (
      {"estimator": "projection", "key": jax.random.split(jax.random.PRNGKey(0), 4)},
      ValueError,
      r"`key`.*batch of keys of shape \(4,\)",
    ),
    ({"norm": "spectral", "key": 7}, TypeError, r"`key`.*integer"),
  ],
)
def test_penalty_bad_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    jaxjac.jacobian_penalty(APPLY, W, X, **kwargs)


def test_integer_inputs_rejected():
  with pytest.raises(TypeError, match="`x`.*floating"):
    jaxjac.jacobian_penalty(APPLY, W, jnp.ones((2, 4), jnp.int32))
  with pytest.raises(TypeError, match="`x`"):
    jaxjac.jacobian(APPLY, W, [[1.0, 2.0]])


def test_apply_fn_without_matching_batch_dimension():
  with pytest.raises(ValueError, match="`apply_fn`.*batch size"):
    jaxjac.jacobian_penalty(lambda p, x: jnp.sum(x @ p, axis=0), W, X)
  with pytest.raises(ValueError, match="`apply_fn`.*batch size"):
    jaxjac.jacobian_penalty(lambda p, x: jnp.sum(x @ p), W, X)
  with pytest.raises(ValueError, match="`apply_fn`.*single array"):
    jaxjac.jacobian_penalty(lambda p, x: (x @ p, {}), W, X)
  with pytest.raises(TypeError, match="`apply_fn`.*callable"):
    jaxjac.jacobian_penalty("model", W, X)


@pytest.mark.parametrize("fn", [jaxjac.first_order_robust_loss, jaxjac.jacobian_surrogate_loss])
def test_surrogate_bad_eps_and_p(fn):
  with pytest.raises(ValueError, match="`eps`"):
    fn(CE, APPLY, W, X, Y, eps=-0.1, p=2)
  with pytest.raises(ValueError, match="`eps`"):
    fn(CE, APPLY, W, X, Y, eps=float("nan"), p=2)
  with pytest.raises(ValueError, match="`p`"):
    fn(CE, APPLY, W, X, Y, eps=0.1, p=1)
  with pytest.raises(ValueError, match="`reduction`"):
    fn(CE, APPLY, W, X, Y, eps=0.1, p=2, reduction="median")


def test_legacy_raw_key_accepted():
  got = jaxjac.jacobian_penalty(APPLY, W, X, estimator="projection", key=jax.random.PRNGKey(0))
  assert got.shape == ()


def test_empty_batch_is_a_named_value_error():
  empty = jnp.zeros((0, 4))
  for call in (
    lambda: jaxjac.jacobian_penalty(APPLY, W, empty),
    lambda: jaxjac.jacobian_penalty(APPLY, W, empty, estimator="jvp", key=jax.random.key(0)),
    lambda: jaxjac.jacobian(APPLY, W, empty),
    lambda: jaxjac.first_order_robust_loss(CE, APPLY, W, empty, Y[:0], eps=0.1, p=2),
  ):
    with pytest.raises(ValueError, match="`x` must hold at least one example"):
      call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x_rejected_when_concrete(bad):
  x = X.at[1, 2].set(bad)
  with pytest.raises(ValueError, match="`x` must be finite"):
    jaxjac.jacobian_penalty(APPLY, W, x)
  with pytest.raises(ValueError, match="`x` must be finite"):  # also when only params are traced
    jax.grad(lambda w: jaxjac.jacobian_penalty(APPLY, w, x))(W)
  with pytest.raises(ValueError, match="`x` must be finite"):
    jaxjac.jacobian_penalty(APPLY, W, np.asarray(x))
  with pytest.raises(ValueError, match="`x` must be finite"):
    jaxjac.first_order_robust_loss(CE, APPLY, W, x, Y, eps=0.1, p=2)


def test_non_finite_x_checked_under_jit_with_checkify():
  fn = lambda w, x: jaxjac.jacobian_penalty(APPLY, w, x, check_finite=True)
  checked = checkify.checkify(jax.jit(fn))
  err, value = checked(W, X)
  err.throw()  # finite: no error
  np.testing.assert_allclose(value, jnp.sum(W**2), rtol=1e-6)
  err, _ = checked(W, X.at[0, 0].set(jnp.nan))
  with pytest.raises(checkify.JaxRuntimeError, match="`x` must be finite"):
    err.throw()
  # Without check_finite a traced x is not checked (documented): the NaN propagates.
  tanh = lambda w, x: jaxjac.jacobian_penalty(lambda p, v: jnp.tanh(v @ p), w, x)
  assert np.isnan(jax.jit(tanh)(W, X.at[0, 0].set(jnp.nan)))
