"""Data parallelism (jaxjac.sharding).

The multi-device checks need several devices before JAX starts, so they run
this file as a script in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the script computes
every quantity on one device and on the 4-device mesh and saves both, and the
tests compare them. The multi-host check starts two such processes (two
devices each) joined by ``jax.distributed`` on localhost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

NUM_DEVICES = 4
BATCH = 8
IMAGE = (12, 12, 1)
LAMBDA_JR = 0.1
# The two-host test: 24 examples, host_shard gives host 0 rows 0..11 and host 1 rows 12..23,
# and each feeds the first 4 of its rows: the global batch is rows 0..3 and 12..15.
HOST_ROWS = np.r_[0:4, 12:16]


# ---------------------------------------------------------------------------
# Shared by the subprocess and the in-process tests.
# ---------------------------------------------------------------------------


def _model():
  import flax.linen as nn

  class SmallCNN(nn.Module):
    """conv 3x3x4 - ReLU - maxpool 2 - dense 16 - ReLU - dropout - dense 10."""

    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, x, *, train=False):
      x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      return nn.Dense(10)(x)

  return SmallCNN()


def _step_model():
  """The train-step tests' model: an MLP with dropout (its second-order step compiles fast)."""
  from jaxjac.models import MLP

  return MLP(features=(16,), dropout_rate=0.25)


def _data(n=BATCH, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (n,) + IMAGE).astype(np.float32)
  y = rng.integers(0, 10, n).astype(np.int32)
  return x, y


def _minimal_train_step(state, batch, key):
  """CE on the dropout model + (lambda/2) * projection JR penalty, one optax update."""
  import jax
  import jax.numpy as jnp

  import jaxjac

  x, y = batch
  key = jax.random.fold_in(key, state.step)
  k_drop, k_proj = jax.random.split(key)

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": k_drop})
    ce = jnp.mean(jaxjac.softmax_cross_entropy(logits, y))
    penalty = jaxjac.jacobian_penalty(
      state.apply_fn, {"params": params}, x, key=k_proj, estimator="projection"
    )
    return ce + 0.5 * LAMBDA_JR * penalty, (ce, penalty)

  (loss, (ce, penalty)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), {"loss": loss, "ce": ce, "penalty": penalty}


_SETUP = {}


def _setup():
  """(train_step, optimizer, name), built once per process.

  jaxjac.training's jitted step with every regularizer at once (weight decay,
  projection JR, input-gradient regularization, PGD adversarial training,
  dropout) when it is importable, else the stand-in above.
  """
  if not _SETUP:
    import optax

    try:
      from jaxjac import training
    except ImportError:
      _SETUP["v"] = (_minimal_train_step, optax.sgd(0.1, momentum=0.9), "stand-in")
    else:
      reg = training.Regularizer(
        weight_decay=1e-3,
        jr_lambda=LAMBDA_JR,
        igr_lambda=0.1,
        at_norm="linf",
        at_eps=0.1,
        at_steps=2,
        at_step_size=0.05,
        at_weight=0.5,
      )
      tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
      _SETUP["v"] = (training.make_train_step(reg), tx, "jaxjac.training")
  return _SETUP["v"]


_INIT = {}


def _init_state(model):
  """A fresh train state (the same every call): params from key 0, step 0."""
  import jax
  import jax.numpy as jnp
  from flax.training import train_state

  _, tx, _ = _setup()
  if model not in _INIT:  # Compile the initialization once.

    def init(key):
      params = model.init(key, jnp.zeros((1,) + IMAGE))["params"]
      return params, tx.init(params)

    _INIT[model] = jax.jit(init)
  params, opt_state = _INIT[model](jax.random.key(0))
  return train_state.TrainState(
    step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=params, tx=tx, opt_state=opt_state
  )


# ---------------------------------------------------------------------------
# The subprocess: run as `python tests/test_sharding.py devices OUT` or
# `python tests/test_sharding.py host OUT` (one of two jax.distributed processes).
# ---------------------------------------------------------------------------


def _save(path, results):
  """np.savez of a dict whose values may be lists of arrays (saved as `name__i`)."""
  flat = {}
  for k, v in results.items():
    if isinstance(v, list):
      flat.update({f"{k}__{i}": np.asarray(a) for i, a in enumerate(v)})
      flat[f"{k}__len"] = np.asarray(len(v))
    else:
      flat[k] = np.asarray(v)
  np.savez(path, **flat)


def _load(path):
  with np.load(path) as f:
    flat = {k: f[k] for k in f.files}
  out = {k: v for k, v in flat.items() if "__" not in k}
  for k in [k[: -len("__len")] for k in flat if k.endswith("__len")]:
    out[k] = [flat[f"{k}__{i}"] for i in range(int(flat[f"{k}__len"]))]
  return out


def _worker_devices(out_path):
  import jax
  import jax.numpy as jnp

  import jaxjac
  from jaxjac import sharding

  jax.config.update("jax_numpy_rank_promotion", "raise")
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  res = {}
  mesh = sharding.make_mesh()
  mesh1 = sharding.make_mesh(1)
  model = _model()
  x, y = _data()
  key = jax.random.key(42)

  # One train step: plain jit on one device against the 4-device step.
  step_model = _step_model()
  train_step, _, res["train_step"] = _setup()
  single = jax.jit(train_step)(_init_state(step_model), (jnp.asarray(x), jnp.asarray(y)), key)
  step = sharding.shard_train_step(train_step, mesh)
  sharded = step(_init_state(step_model), (x, y), key)
  res["step_single"] = jax.tree.leaves(jax.device_get(single[0].params))
  res["step_sharded"] = jax.tree.leaves(sharding.gather(sharded[0].params))
  names = sorted(single[1])
  res["metric_names"] = names
  res["metrics_single"] = [float(single[1][k]) for k in names]
  res["metrics_sharded"] = [float(sharded[1][k]) for k in names]
  res["state_spec"] = str(tuple(jax.tree.leaves(sharded[0].params)[0].sharding.spec))
  change = jax.tree.map(
    lambda a, b: jnp.max(jnp.abs(a - b)), single[0].params, _init_state(step_model).params
  )
  res["step_change"] = max(float(v) for v in jax.tree.leaves(change))

  # Reference for the two-host test: the 4-device step on the rows the two hosts feed.
  x24, y24 = _data(3 * BATCH)
  ref_state, ref_metrics = step(_init_state(step_model), (x24[HOST_ROWS], y24[HOST_ROWS]), key)
  res["host_ref_loss"] = float(ref_metrics["loss"])
  res["host_ref_leaves"] = jax.tree.leaves(sharding.gather(ref_state.params))

  # The projection penalty's randomness: 1 device vs 4 devices, same key.
  variables = _init_variables(model)

  def penalty(variables, x, key):
    values = jaxjac.jacobian_penalty(
      model.apply,
      variables,
      x,
      key=key,
      estimator="projection",
      num_projections=2,
      reduction="none",
    )
    return values, jnp.mean(values)

  pk = jax.random.key(7)
  outs = ("batch", "replicated")
  pen1 = sharding.shard_fn(penalty, mesh1, batch_argnums=(1,), out_shardings=outs)
  pen4 = sharding.shard_fn(penalty, mesh, batch_argnums=(1,), out_shardings=outs)
  (res["pen_mesh1"], res["mean_1"]), (res["pen_mesh4"], res["mean_4"]) = jax.device_get(
    (pen1(variables, x, pk), pen4(variables, x, pk))
  )
  res["pen_spec"] = str(tuple(pen4(variables, x, pk)[0].sharding.spec))
  res["pen_other_key"] = np.asarray(pen1(variables, x, jax.random.key(8))[0])

  # PGD: one device against 4 devices.
  from jaxjac import attacks

  kw = dict(eps=0.1, norm="linf", steps=5, step_size=0.01)
  attack = attacks.pgd
  ak = jax.random.key(3)
  on_one = jax.device_put((variables, x, y), jax.devices()[0])  # Unsplit, on one device.
  res["pgd_single"] = np.asarray(attack(model.apply, *on_one, key=ak, **kw))
  adv4 = sharding.shard_attack(attack, model.apply, mesh, **kw)(variables, x, y, ak)
  res["pgd_sharded"] = np.asarray(adv4)
  res["pgd_spec"] = str(tuple(adv4.sharding.spec))
  res["pgd_shard_rows"] = [shard.data.shape[0] for shard in adv4.addressable_shards]
  # The step's gradient mean is an all-reduce over the 4 devices (data parallelism).
  res["step_hlo_all_reduce"] = (
    "all-reduce" in step.lower(_init_state(step_model), (x, y), key).compile().as_text()
  )

  # Global batch placement and local copies on the 4-device mesh.
  gb = sharding.shard_global_batch((x, y), mesh)
  res["global_batch_spec"] = str(tuple(gb[0].sharding.spec))
  res["global_batch_equal"] = bool(np.array_equal(np.asarray(gb[0]), x))
  res["global_batch_rows"] = [s.data.shape[0] for s in gb[0].addressable_shards]
  local = sharding.unreplicate(sharded[0].params)
  res["unreplicate_devices"] = sorted({len(v.devices()) for v in jax.tree.leaves(local)})
  res["unreplicate_diff"] = _max_diff(jax.tree.leaves(local), res["step_sharded"])
  try:
    sharding.unreplicate({"adv": adv4})
    res["unreplicate_error"] = ""
  except ValueError as e:
    res["unreplicate_error"] = str(e)

  # A batch that does not split over 4 devices.
  try:
    step(sharded[0], (x[:6], y[:6]), key)
    res["bad_batch_error"] = ""
  except ValueError as e:
    res["bad_batch_error"] = str(e)
  try:
    sharding.mesh_for_config(0, batch_size=6)
    res["bad_config_error"] = ""
  except ValueError as e:
    res["bad_config_error"] = str(e)
  res["config_mesh_sizes"] = [sharding.mesh_for_config(n, batch_size=8).size for n in (0, 2)]
  _save(out_path, res)


def _worker_train(out_path):
  """jaxjac.training.train with config.num_devices = 4 against 1 (the default)."""
  import jax

  from jaxjac import sharding

  jax.config.update("jax_numpy_rank_promotion", "raise")
  from jaxjac import data, training

  res = {}

  rng = np.random.default_rng(1)
  images = rng.uniform(0, 1, (48, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, 48).astype(np.int32)
  dataset = data.Dataset(images[:32], labels[:32], images[32:], labels[32:], source="synthetic")
  config = training.tiny(training.default_config())
  config.reg.jr_lambda = 0.1
  config.update({"batch_size": 8, "num_steps": 3, "heldout_size": 8, "eval_batch_size": 16})
  config.data.update({"train_size": 0, "test_size": 0})
  runs = {}
  for n in (1, NUM_DEVICES):
    config.num_devices = n
    with tempfile.TemporaryDirectory() as workdir:
      runs[n] = training.train(config, workdir, dataset=dataset)
  for n in (1, NUM_DEVICES):
    res[f"train_params_{n}"] = jax.tree.leaves(sharding.gather(runs[n].state.params))
  res["train_loss"] = [runs[n].summary["train"]["loss"] for n in (1, NUM_DEVICES)]
  res["train_spec"] = str(tuple(jax.tree.leaves(runs[NUM_DEVICES].state.params)[0].sharding.spec))
  res["train_ndev"] = len(jax.tree.leaves(runs[NUM_DEVICES].state.params)[0].sharding.device_set)

  _save(out_path, res)


def _worker_host(out_path):
  """One of two processes with 2 devices each; every host feeds its own data shard."""
  import jax

  from jaxjac import sharding

  assert sharding.initialize_distributed()
  assert jax.process_count() == 2 and jax.device_count() == NUM_DEVICES
  mesh = sharding.make_mesh()
  x, y = _data(3 * BATCH)  # Every host "loads" the same dataset ...
  part = sharding.host_shard(len(x))  # ... and keeps its contiguous share.
  local_size = sharding.host_batch_size(BATCH, mesh)
  xs, ys = x[part][:local_size], y[part][:local_size]
  step = sharding.shard_train_step(_setup()[0], mesh)
  state, metrics = step(_init_state(_step_model()), (xs, ys), jax.random.key(42))
  params = sharding.gather(state.params)
  # Every process holds the same global batch and sends only its rows: the result must equal
  # the single-process step on that batch.
  gx, gy = _data()
  rows = [sharding.host_batch_slice(BATCH, mesh, process_index=i) for i in range(2)]
  global_batch = sharding.shard_global_batch((gx, gy), mesh)
  g_state, g_metrics = step(_init_state(_step_model()), global_batch, jax.random.key(42))
  local = sharding.unreplicate(g_state.params)
  if jax.process_index() == 0:
    _save(
      out_path,
      {
        "part": [part.start, part.stop],
        "local": local_size,
        "loss": float(metrics["loss"]),
        "leaves": jax.tree.leaves(params),
        "rows": [[r.start, r.stop] for r in rows],
        "global_shape": list(global_batch[0].shape),
        "global_loss": float(g_metrics["loss"]),
        "global_leaves": jax.tree.leaves(sharding.gather(g_state.params)),
        "local_leaves": [np.asarray(v) for v in jax.tree.leaves(local)],
        "local_devices": [len(v.devices()) for v in jax.tree.leaves(local)],
      },
    )


def _run_worker(mode, out_path, env_extra):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={env_extra.pop('devices')}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env.update(env_extra)
  return subprocess.Popen(
    [sys.executable, os.path.abspath(__file__), mode, out_path],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(proc, timeout=600):
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    raise AssertionError(f"worker timed out after {timeout} s:\n{out[-4000:]}") from None
  if proc.returncode != 0:
    raise AssertionError(f"worker failed with code {proc.returncode}:\n{out[-4000:]}")


@pytest.fixture(scope="module")
def devices4():
  """Results of the 4-device subprocess, computed once for the module."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "out.npz")
    _finish(_run_worker("devices", path, {"devices": NUM_DEVICES}))
    return _load(path)


# ---------------------------------------------------------------------------
# Multi-device tests (subprocess).
# ---------------------------------------------------------------------------


def _max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
    for u, v in zip(a, b, strict=True)
  )


def test_sharded_train_step_equals_single_device_step(devices4):
  # The step moves the parameters by far more than the tolerance, so equality is not vacuous.
  assert float(devices4["step_change"]) > 1e-3
  assert _max_diff(devices4["step_single"], devices4["step_sharded"]) <= 1e-5
  np.testing.assert_allclose(
    np.asarray(devices4["metrics_sharded"]),
    np.asarray(devices4["metrics_single"]),
    rtol=1e-5,
    atol=1e-6,
  )
  assert str(devices4["state_spec"]) == "()"  # Replicated.
  assert bool(devices4["step_hlo_all_reduce"])


@pytest.mark.slow
def test_training_config_num_devices():
  """jaxjac.training.train with num_devices=4: the same 3 steps as on one device."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "train.npz")
    _finish(_run_worker("train", path, {"devices": NUM_DEVICES}))
    res = _load(path)
  one, four = res["train_params_1"], res[f"train_params_{NUM_DEVICES}"]
  assert int(res["train_ndev"]) == NUM_DEVICES and str(res["train_spec"]) == "()"
  assert _max_diff(one, four) <= 1e-5
  loss1, loss4 = (float(v) for v in res["train_loss"])
  assert abs(loss1 - loss4) <= 1e-5 * max(1.0, abs(loss1))


def test_projection_penalty_randomness_independent_of_device_count(devices4):
  one, four = devices4["pen_mesh1"], devices4["pen_mesh4"]
  assert str(devices4["pen_spec"]) == "('data',)"  # Really split over 4 devices.
  np.testing.assert_allclose(four, one, rtol=1e-6, atol=1e-6)
  assert abs(float(devices4["mean_4"]) - float(devices4["mean_1"])) <= 1e-6 * max(
    1.0, abs(float(devices4["mean_1"]))
  )
  # Another key gives other per-example draws, so the check above could fail.
  assert np.min(np.abs(devices4["pen_other_key"] - one) / one) > 1e-3


def test_sharded_pgd_gives_the_same_adversarial_examples(devices4):
  single, sharded = devices4["pgd_single"], devices4["pgd_sharded"]
  assert str(devices4["pgd_spec"]) == "('data',)"
  assert [int(n) for n in devices4["pgd_shard_rows"]] == [BATCH // NUM_DEVICES] * NUM_DEVICES
  x, _ = _data()
  assert float(np.max(np.abs(single - x))) > 0.05  # The attack moved the inputs.
  np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-6)


def test_global_batch_and_unreplicate_on_four_devices(devices4):
  assert str(devices4["global_batch_spec"]) == "('data',)"
  assert bool(devices4["global_batch_equal"])
  assert [int(n) for n in devices4["global_batch_rows"]] == [BATCH // NUM_DEVICES] * NUM_DEVICES
  assert [int(n) for n in devices4["unreplicate_devices"]] == [1]
  assert float(devices4["unreplicate_diff"]) == 0.0
  assert "`tree['adv']` is not replicated" in str(devices4["unreplicate_error"])


def test_batch_not_multiple_of_devices_raises(devices4):
  message = str(devices4["bad_batch_error"])
  assert "multiple of the 4 devices" in message and "got 6" in message
  message = str(devices4["bad_config_error"])
  assert "`batch_size` must be a multiple of the 4 devices" in message and "got 6" in message
  assert [int(n) for n in devices4["config_mesh_sizes"]] == [4, 2]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_equal_one_host(devices4):
  """2 processes x 2 devices, each feeding its own host shard, match 1 process x 4 devices."""
  port = _free_port()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "host.npz")
    procs = [
      _run_worker(
        "host",
        path,
        {
          "devices": 2,
          "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
          "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(i),
        },
      )
      for i in range(2)
    ]
    for p in procs:
      _finish(p)
    host = _load(path)
  assert list(host["part"]) == [0, 12] and int(host["local"]) == 4
  assert abs(float(host["loss"]) - float(devices4["host_ref_loss"])) <= 1e-5
  assert _max_diff(host["leaves"], devices4["host_ref_leaves"]) <= 1e-5
  # The global-batch path: process 0 sends rows 0..3, process 1 rows 4..7, and the step equals
  # the single-device step on the whole batch.
  assert [list(r) for r in host["rows"]] == [[0, 4], [4, 8]]
  assert list(host["global_shape"]) == [BATCH, *IMAGE]
  assert (
    abs(
      float(host["global_loss"])
      - float(devices4["metrics_single"][list(devices4["metric_names"]).index("loss")])
    )
    <= 1e-5
  )
  assert _max_diff(host["global_leaves"], devices4["step_single"]) <= 1e-5
  # unreplicate: this process's copy, on one device, equal to the gathered values.
  assert set(int(n) for n in host["local_devices"]) == {1}
  assert _max_diff(host["local_leaves"], host["global_leaves"]) == 0.0


# ---------------------------------------------------------------------------
# Single-process tests.
# ---------------------------------------------------------------------------


def test_check_batch_size_and_host_shard():
  import jax

  from jaxjac import sharding

  mesh = sharding.make_mesh(1)
  assert sharding.check_batch_size(6, mesh) == 6
  assert sharding.num_data_shards(mesh) == 1
  with pytest.raises(ValueError, match="num_devices"):
    sharding.make_mesh(len(jax.devices()) + 1)
  with pytest.raises(TypeError, match="mesh"):
    sharding.data_sharding("data")
  # 10 examples over 3 hosts: 3 each, contiguous, the last one dropped.
  parts = [sharding.host_shard(10, process_index=i, process_count=3) for i in range(3)]
  assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 6), (6, 9)]
  with pytest.raises(ValueError, match="process_index"):
    sharding.host_shard(10, process_index=3, process_count=3)
  with pytest.raises(ValueError, match="num_examples"):
    sharding.host_shard(2, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="leading"):
    sharding.shard_batch((np.zeros((4, 2)), np.zeros((3,))), mesh)
  with pytest.raises(ValueError, match="out_shardings"):
    sharding.shard_fn(lambda a: a, mesh, out_shardings="sharded")
  assert sharding.mesh_for_config(1, batch_size=7) is None  # One device: no mesh.
  with pytest.raises(ValueError, match="num_devices"):
    sharding.mesh_for_config(-1, batch_size=8)
  with pytest.raises(ValueError, match="num_devices"):
    sharding.mesh_for_config(len(jax.devices()) + 1, batch_size=8)


def test_host_batch_slice_single_process():
  from jaxjac import sharding

  mesh = sharding.make_mesh(1)
  assert sharding.host_batch_slice(8, mesh) == slice(0, 8)
  with pytest.raises(ValueError, match="process_index` 1 has no device"):
    sharding.host_batch_slice(8, mesh, process_index=1)
  with pytest.raises(ValueError, match="global_batch_size"):
    sharding.host_batch_slice(0, mesh)
  x = np.arange(12.0).reshape(6, 2)
  placed = sharding.shard_global_batch({"x": x}, mesh)
  np.testing.assert_array_equal(np.asarray(placed["x"]), x)
  with pytest.raises(ValueError, match="leading"):
    sharding.shard_global_batch((x, x[:5]), mesh)


@pytest.mark.parametrize("name", ["host_data", "sharding"])
def test_docstring_examples(name):
  import doctest
  import importlib

  module = importlib.import_module(f"jaxjac._src.{name}")
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0


def test_initialize_distributed_reads_environment():
  from jaxjac import sharding

  assert sharding.initialize_distributed(environ={}) is False
  assert (
    sharding.initialize_distributed(
      environ={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "n1"}
    )
    is False
  )
  with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS"):
    sharding.initialize_distributed(environ={"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    sharding.initialize_distributed(
      environ={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}
    )
  with pytest.raises(ValueError, match="JAX_PROCESS_ID must be in"):
    sharding.initialize_distributed(
      environ={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}
    )
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
    sharding.initialize_distributed(
      environ={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}
    )


def _init_variables(model):
  import jax
  import jax.numpy as jnp

  return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1,) + IMAGE))


if __name__ == "__main__":
  _mode, _out = sys.argv[1], sys.argv[2]
  {"devices": _worker_devices, "host": _worker_host, "train": _worker_train}[_mode](_out)
