"""jaxjac.cpu_speed.max_pool against flax's reduce_window max-pool."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol

import jaxjac
from jaxjac.cpu_speed import max_pool


@pytest.mark.parametrize("shape,window", [((2, 28, 28, 3), (2, 2)), ((3, 7, 9, 4), (2, 2)),
                                          ((1, 9, 8, 2), (3, 4))])
def test_values_equal_flax_max_pool(shape, window):
  x = jax.random.normal(jax.random.key(0), shape)
  want = nn.max_pool(x, window, strides=window)  # VALID: trailing rows dropped
  got = max_pool(x, window)
  assert got.shape == want.shape
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_hand_computed_windows():
  x = jnp.array([[1.0, 9.0, 2.0, 0.0], [3.0, 4.0, -1.0, 5.0]]).reshape(1, 2, 4, 1)
  np.testing.assert_array_equal(np.asarray(max_pool(x))[0, :, :, 0], [[9.0, 5.0]])


def _lenet_like(pool):
  def apply(w, x):
    h = jax.lax.conv_general_dilated(x, w["c"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = pool(jax.nn.relu(h))
    return h.reshape(h.shape[0], -1) @ w["d"]
  return apply


def test_first_and_second_derivatives_match_reduce_window():
  # Random continuous inputs: window maxima are unique, so gradients must agree,
  # including the parameter gradient of the Jacobian penalty (a second derivative).
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  w = {"c": 0.3 * jax.random.normal(k1, (3, 3, 1, 4)),
       "d": 0.2 * jax.random.normal(k2, (4 * 4 * 4, 5))}
  x = jax.random.uniform(k3, (3, 8, 8, 1))
  fast = _lenet_like(max_pool)
  ref = _lenet_like(lambda h: nn.max_pool(h, (2, 2), strides=(2, 2)))
  np.testing.assert_allclose(jaxjac.jacobian(fast, w, x), jaxjac.jacobian(ref, w, x),
                             rtol=tol(1e-5), atol=tol(1e-6))
  pen = lambda f: jax.grad(lambda p: jaxjac.jacobian_penalty(f, p, x))(w)
  got, want = pen(fast), pen(ref)
  for name in w:
    np.testing.assert_allclose(got[name], want[name], rtol=tol(1e-4), atol=tol(1e-6))
  assert float(jnp.max(jnp.abs(want["c"]))) > 1e-3  # the comparison is not vacuous


@pytest.mark.parametrize("x,window,err", [
    (jnp.zeros((2, 4, 4)), (2, 2), ValueError),
    (jnp.zeros((1, 4, 4, 1)), (2,), ValueError),
    (jnp.zeros((1, 4, 4, 1)), (0, 2), ValueError),
    (jnp.zeros((1, 4, 4, 1)), (5, 2), ValueError),
    (jnp.zeros((1, 4, 4, 1)), (2.0, 2), TypeError),
    (jnp.zeros((1, 4, 4, 1), jnp.int32), (2, 2), TypeError),
])
def test_bad_input_raises(x, window, err):
  with pytest.raises(err, match="window|x"):
    max_pool(x, window)
