"""Every documented bad input raises an error that names the argument."""

import jax
import jax.numpy as jnp
import pytest

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
    fn(CE, APPLY, W, X, Y, eps=0.1, p=2, reduction="sum")
