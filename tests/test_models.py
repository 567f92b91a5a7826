"""LeNet' and MLP: parameter counts in closed form, outputs against a hand-written
reference, the max-pool's derivatives against flax's at ties, dropout statistics, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol

import jaxjac
from jaxjac import models
from jaxjac._src.models import _max_pool


def _images(key, batch=3):
  return jax.random.uniform(jax.random.key(key), (batch, 28, 28, 1))


def _count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_lenet_parameter_count_closed_form():
  params = jax.eval_shape(models.LeNet().init, jax.random.key(0), _images(0, 1))["params"]
  conv1 = 5 * 5 * 1 * 32 + 32
  conv2 = 5 * 5 * 32 * 64 + 64
  dense1 = (7 * 7 * 64) * 1024 + 1024
  dense2 = 1024 * 10 + 10
  assert _count(params) == conv1 + conv2 + dense1 + dense2 == 3_274_634


def test_mlp_parameter_count_closed_form():
  params = jax.eval_shape(models.MLP().init, jax.random.key(0), _images(0, 1))["params"]
  assert _count(params) == (784 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)


def _conv_same(x, w, b):
  out = jax.lax.conv_general_dilated(
    x,
    w,
    (1, 1),
    "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=jax.lax.Precision.HIGHEST,
  )
  return out + b[None, None, None, :]


def _maxpool2(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_lenet_matches_hand_written_reference():
  """Layer order, SAME padding, 2x2 pooling and flattening, written out by hand.

  With ``dropout_rate=0.5`` the evaluation output is the reference and the
  training output is not.
  """
  x = _images(1)
  model = models.LeNet(dropout_rate=0.5)
  variables = jax.jit(model.init)(jax.random.key(2), x)
  p = variables["params"]
  hp = jax.lax.Precision.HIGHEST
  h = _maxpool2(jax.nn.relu(_conv_same(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])))
  h = _maxpool2(jax.nn.relu(_conv_same(h, p["Conv_1"]["kernel"], p["Conv_1"]["bias"])))
  assert h.shape == (3, 7, 7, 64)
  h = h.reshape(3, -1)
  h = jax.nn.relu(jnp.dot(h, p["Dense_0"]["kernel"], precision=hp) + p["Dense_0"]["bias"][None])
  ref = jnp.dot(h, p["Dense_1"]["kernel"], precision=hp) + p["Dense_1"]["bias"][None]
  with jax.default_matmul_precision("highest"):
    out = jax.jit(model.apply)(variables, x)
  assert out.shape == (3, 10)
  np.testing.assert_allclose(out, ref, rtol=tol(1e-5), atol=tol(1e-5))
  train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(11)})
  assert float(jnp.max(jnp.abs(train - out))) > 1e-3


def test_mlp_matches_numpy_reference():
  x = _images(3)
  model = models.MLP(features=(16, 8), num_classes=5)
  variables = model.init(jax.random.key(4), x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  h = np.asarray(x, np.float64).reshape(3, -1)
  h = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
  h = np.maximum(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0)
  ref = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
  with jax.default_matmul_precision("highest"):
    out = model.apply(variables, x)
  np.testing.assert_allclose(out, ref, rtol=tol(1e-5), atol=tol(1e-5))


@pytest.mark.probabilistic
def test_dropout_is_inverted_and_keeps_about_half():
  """With readout weights 1 and bias 0 the logit is sum_i m_i h_i / (1 - p).

  Fixed keys; over 4000 hidden units the kept fraction is 0.5 +- 0.03 and the
  dropout logit equals the evaluation logit within 5% (its relative standard
  deviation is about ||h||_2 / sum h < 2% here).
  """
  x = _images(5, 1)
  model = models.MLP(features=(4000,), num_classes=1, dropout_rate=0.5)
  variables = model.init(jax.random.key(6), x)
  p = variables["params"]
  p = {
    **p,
    "Dense_1": {
      "kernel": jnp.ones_like(p["Dense_1"]["kernel"]),
      "bias": jnp.zeros_like(p["Dense_1"]["bias"]),
    },
  }
  variables = {"params": p}
  evaluation = model.apply(variables, x)
  assert jnp.array_equal(evaluation, model.apply(variables, x, train=False))
  hidden = jax.nn.relu(x.reshape(1, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
  np.testing.assert_allclose(evaluation[0, 0], jnp.sum(hidden), rtol=tol(1e-5))
  train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(7)})
  again = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(7)})
  other = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(8)})
  assert jnp.array_equal(train, again)
  assert not jnp.array_equal(train, other)
  np.testing.assert_allclose(train[0, 0], evaluation[0, 0], rtol=0.05)

  # The kept fraction, read from a second readout that counts kept units.
  ones = {
    "params": {
      **p,
      "Dense_0": {
        "kernel": jnp.zeros_like(p["Dense_0"]["kernel"]),
        "bias": jnp.ones_like(p["Dense_0"]["bias"]),
      },
    }
  }
  kept = model.apply(ones, x, train=True, rngs={"dropout": jax.random.key(7)})[0, 0]
  assert abs(float(kept) * 0.5 / 4000 - 0.5) < 0.03


def test_get_model():
  lenet = models.get_model("lenet", dropout_rate=0.5)
  assert lenet == models.LeNet(dropout_rate=0.5) and lenet.dropout_rate == 0.5
  mlp = models.get_model("mlp", features=[32, 16], num_classes=3)
  assert mlp.features == (32, 16) and mlp.num_classes == 3
  params = jax.eval_shape(mlp.init, jax.random.key(0), _images(0, 1))["params"]
  assert _count(params) == (784 * 32 + 32) + (32 * 16 + 16) + (16 * 3 + 3)
  with pytest.raises(ValueError, match="`name` must be one of"):
    models.get_model("resnet")
  with pytest.raises(TypeError, match="features"):
    models.get_model("lenet", features=(32,))


# ----------------------------------------------------------------------------- max-pool


def _flax_pool(x, window=(2, 2)):
  return nn.max_pool(x, window, strides=window)


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (3, 7, 9, 4), (1, 2, 2, 1)])
def test_pool_values_equal_flax_max_pool(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  want = _flax_pool(x)  # VALID: trailing rows and columns dropped
  got = _max_pool(x)
  assert got.shape == want.shape
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  with_nan = x.at[0, 0, 1, 0].set(jnp.nan).at[-1, 0, 0, -1].set(jnp.nan)
  np.testing.assert_array_equal(np.asarray(_max_pool(with_nan)), np.asarray(_flax_pool(with_nan)))
  assert np.isnan(_max_pool(jnp.full((1, 2, 2, 1), jnp.nan))).all()


def test_pool_ties_send_the_cotangent_to_the_first_maximum():
  """A window of three tied maxima: all of the cotangent to the first, row-major, as
  flax/XLA and PyTorch; a mean over ties (jnp.max's derivative) gives 1/3 each."""
  x = jnp.array([[0.0, 2.0], [2.0, 2.0]]).reshape(1, 2, 2, 1)
  for pool in (_max_pool, _flax_pool):
    grad = jax.grad(lambda v, pool=pool: jnp.sum(pool(v)))(x)[0, :, :, 0]
    np.testing.assert_array_equal(np.asarray(grad), [[0.0, 1.0], [0.0, 0.0]])
  x = jnp.array([[1.0, 0.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda v: jnp.sum(_max_pool(v)))(x)[0, :, :, 0]
  np.testing.assert_array_equal(np.asarray(grad), [[1.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("shape", [(3, 8, 10, 4), (2, 7, 9, 3)])
def test_pool_derivatives_equal_flax_with_many_ties(shape):
  """Integer-valued inputs in {0, 1, 2}: most windows tie. VJP and JVP bit-equal flax's."""
  x = jax.random.randint(jax.random.key(1), shape, 0, 3).astype(jnp.float32)
  out_shape = _flax_pool(x).shape
  ct = jax.random.normal(jax.random.key(2), out_shape)
  tangent = jax.random.normal(jax.random.key(3), shape)
  got = jax.vjp(_max_pool, x)[1](ct)[0]
  want = jax.vjp(_flax_pool, x)[1](ct)[0]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  got = jax.jvp(_max_pool, (x,), (tangent,))[1]
  want = jax.jvp(_flax_pool, (x,), (tangent,))[1]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _lenet_like(pool):
  def apply(w, x):
    h = jax.lax.conv_general_dilated(
      x, w["c"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = pool(jax.nn.relu(h + w["b"][None, None, None, :]))
    return h.reshape(h.shape[0], -1) @ w["d"]

  return apply


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_pool_penalty_and_its_parameter_gradient_equal_flax(bias):
  """The Jacobian penalty and its parameter gradient (a second derivative through the pool).

  With ``bias=0.3`` and inputs that are 0 on a background, as on MNIST, the windows on the
  background tie at the positive bias: the case where averaging over ties was wrong.
  """
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  w = {
    "c": 0.3 * jax.random.normal(k1, (3, 3, 1, 4)),
    "b": jnp.full((4,), bias),
    "d": 0.2 * jax.random.normal(k2, (4 * 4 * 4, 5)),
  }
  x = jax.random.uniform(k3, (3, 8, 8, 1))
  x = x.at[:, :, :4].set(0.0)  # a constant background on the left half
  fast, ref = _lenet_like(_max_pool), _lenet_like(_flax_pool)
  np.testing.assert_allclose(
    jaxjac.jacobian(fast, w, x), jaxjac.jacobian(ref, w, x), rtol=tol(1e-5), atol=tol(1e-6)
  )
  pen = lambda f: jax.value_and_grad(lambda p: jaxjac.jacobian_penalty(f, p, x))(w)
  (got_v, got), (want_v, want) = pen(fast), pen(ref)
  np.testing.assert_allclose(got_v, want_v, rtol=tol(1e-5))
  for name in w:
    np.testing.assert_allclose(got[name], want[name], rtol=tol(1e-4), atol=tol(1e-6))
  assert float(jnp.max(jnp.abs(want["c"]))) > 1e-3  # the comparison is not vacuous


@pytest.mark.parametrize("model", [models.LeNet(), models.MLP(features=(8,))])
def test_input_errors(model):
  with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
    model.init(jax.random.key(0), jnp.zeros((2, 784)))
  with pytest.raises(TypeError, match="floating-point"):
    model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1), jnp.uint8))


def test_bad_dropout_rate():
  with pytest.raises(ValueError, match="dropout_rate"):
    models.MLP(features=(8,), dropout_rate=1.0).init(jax.random.key(0), _images(0, 1))
