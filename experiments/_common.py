"""Shared plumbing of the experiment scripts: configs, resumable training, evaluation.

Not a public module: ``experiments/hoffman.py`` and ``experiments/wu_li.py``
import it from their own directory.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxjac
from jaxjac import training

try:  # the public attack module
  from jaxjac import attacks
except ImportError:  # pragma: no cover - before jaxjac.attacks is exported
  from jaxjac._src import attacks  # noqa: PLC2701

HERE = os.path.dirname(os.path.abspath(__file__))

# Reuse compiled steps across runs that differ only in seeds (saves minutes on a CPU).
jax.config.update(
  "jax_compilation_cache_dir",
  os.path.join(os.path.dirname(HERE), "runs", "experiments", "jax_cache"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
CONFIG_DIR = os.path.join(HERE, "configs")
RESULTS_DIR = os.path.join(HERE, "results")
FIGURES_DIR = os.path.join(HERE, "figures")
RUNS_DIR = os.path.join(os.path.dirname(HERE), "runs", "experiments")


# ----------------------------------------------------------------------------- configs


def load_config_module(name: str):
  """The module ``experiments/configs/<name>.py``."""
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_jaxjac_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name: str, arg: str, *, tiny: bool):
  """``experiments/configs/<name>.py``'s ``get_config(arg[,tiny])``."""
  return load_config_module(name).get_config(f"{arg},tiny" if tiny else arg)


# ----------------------------------------------------------------------------- data


@functools.cache
def load_data(source: str = "auto"):
  """MNIST (full, from ``../shared/data/mnist`` when present), loaded once."""
  return jaxjac.data.load_mnist(source, verbose=False)


def subset(n: int, size: int, *, seed: int) -> np.ndarray:
  """A fixed sorted random subset of ``range(n)`` of `size` (all if 0)."""
  if size <= 0 or size >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng([seed, 0xE7A1]).permutation(n)[:size])


# ----------------------------------------------------------------------------- training


def train_or_restore(config, workdir: str, *, dataset=None) -> tuple[Any, dict, float]:
  """Trains `config` in `workdir` (resuming from its checkpoints), or restores it.

  A finished run (its ``summary.json`` at the last step) is restored from its
  final checkpoint, not retrained. The wall time of every training call is
  added up in ``workdir/timing.json``.

  Returns:
    ``(state, summary, train_seconds)``: the total training wall time of the run.
  """
  timing_path = os.path.join(workdir, "timing.json")
  spent = 0.0
  if os.path.exists(timing_path):
    with open(timing_path) as f:
      spent = json.load(f)["train_seconds"]
  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    if summary["step"] == summary["total_steps"]:
      spe = max(1, summary["num_train"] // config.batch_size)
      state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=spe)
      state = training.restore_checkpoint(workdir, state)
      return state, summary, spent
  t0 = time.perf_counter()
  result = training.train(config, workdir, resume=True, dataset=dataset)
  spent += time.perf_counter() - t0
  with open(timing_path, "w") as f:
    json.dump({"train_seconds": spent}, f)
  return result.state, result.summary, spent


def _train_subset(n: int, size: int, *, seed: int) -> np.ndarray:
  # The fixed subset rule of jaxjac.training.train (config.data.train_size / test_size).
  order = np.random.default_rng([seed, 0x5EB5E7]).permutation(n)
  return np.sort(order[: size or n])


def train_data(config, dataset):
  """The training and test arrays ``train()`` used for `config` (same subsets)."""
  tr = _train_subset(dataset.num_train, config.data.train_size, seed=config.seed)
  te = _train_subset(dataset.num_test, config.data.test_size, seed=config.seed)
  return (
    dataset.train_images[tr],
    dataset.train_labels[tr],
    dataset.test_images[te],
    dataset.test_labels[te],
  )


# ----------------------------------------------------------------------------- evaluation


def accuracy(apply_fn, params, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1000) -> float:
  """Clean accuracy in batches."""
  return training.accuracy(apply_fn, params, x, y, batch_size=min(batch_size, len(y)))


@functools.partial(jax.jit, static_argnums=0)
def _jacobian_norms(apply_fn, params, x):
  jac = jaxjac.jacobian(apply_fn, params, x, per_example=False, method="vjp")
  jac = jac.reshape(jac.shape[0], -1)
  return jnp.sqrt(jnp.sum(jnp.square(jac), -1)), jnp.sum(jnp.abs(jac), -1)


def jacobian_norms(apply_fn, params, x: np.ndarray, *, batch_size: int = 200) -> dict:
  """Mean exact ``||J||_F`` and ``||J||_{1,1}`` of the logits over `x` (in batches)."""
  fro, l11 = [], []
  for lo in range(0, len(x), batch_size):
    f, a = _jacobian_norms(apply_fn, params, jnp.asarray(x[lo : lo + batch_size]))
    fro.append(np.asarray(f))
    l11.append(np.asarray(a))
  fro, l11 = np.concatenate(fro), np.concatenate(l11)
  return {
    "jacobian_fro": float(fro.mean()),
    "jacobian_fro_std": float(fro.std()),
    "jacobian_l11": float(l11.mean()),
    "n": int(len(x)),
  }


@functools.partial(jax.jit, static_argnums=0)
def _correct(apply_fn, params, x, y):
  return jnp.argmax(apply_fn(params, x), -1) == y


def correct(apply_fn, params, x, y) -> np.ndarray:
  """Per-example correctness (bool NumPy)."""
  return np.asarray(_correct(apply_fn, params, jnp.asarray(x), jnp.asarray(y)))


def _batched(fn, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
  out = []
  for lo in range(0, len(y), batch_size):
    out.append(fn(jnp.asarray(x[lo : lo + batch_size]), jnp.asarray(y[lo : lo + batch_size]), lo))
  return np.concatenate(out)


def noise_accuracy(
  apply_fn, params, x, y, *, sigma: float, key: jax.Array, batch_size: int = 500
) -> float:
  """Accuracy under Gaussian noise of std `sigma`, clipped to [0, 1]."""

  def fn(xb, yb, lo):
    noise = sigma * jax.random.normal(jax.random.fold_in(key, lo), xb.shape)
    return correct(apply_fn, params, jnp.clip(xb + noise, 0.0, 1.0), yb)

  return float(_batched(fn, x, y, batch_size).mean())


def attack_correct(
  apply_fn,
  params,
  x,
  y,
  *,
  method: str,
  norm: str,
  eps: float,
  key: jax.Array,
  steps: int = 10,
  restarts: int = 1,
  loss: str = "ce",
  batch_size: int = 500,
) -> np.ndarray:
  """Per-example correctness under one attack (``fgsm``, ``pgd`` or ``apgd``)."""

  def fn(xb, yb, lo):
    k = jax.random.fold_in(key, lo)
    if eps == 0:
      x_adv = xb
    elif method == "fgsm":
      x_adv = attacks.fgsm(apply_fn, params, xb, yb, eps=eps, norm=norm)
    elif method == "pgd":
      x_adv = attacks.pgd(
        apply_fn,
        params,
        xb,
        yb,
        eps=eps,
        norm=norm,
        steps=steps,
        key=k,
        restarts=restarts,
        loss=loss,
      )
    elif method == "apgd":
      x_adv = attacks.apgd(
        apply_fn,
        params,
        xb,
        yb,
        eps=eps,
        norm=norm,
        steps=steps,
        key=k,
        restarts=restarts,
        loss=loss,
      )
    else:
      raise ValueError(f"`method` must be fgsm, pgd or apgd, got {method!r}.")
    return correct(apply_fn, params, x_adv, yb)

  return _batched(fn, x, y, batch_size)


def worst_case(
  apply_fn,
  params,
  x,
  y,
  *,
  norm: str,
  eps: float,
  key: jax.Array,
  pgd_steps: int,
  pgd_restarts: int,
  apgd_steps: int,
  batch_size: int = 500,
  pgd_1: np.ndarray | None = None,
) -> dict:
  """Robust accuracy: the per-example worst case over PGD (CE, restarts), APGD-CE and
  APGD-DLR, with the per-attack accuracies and a restart sanity check.

  ``pgd_1`` (one restart, same key) must be >= ``pgd`` (``pgd_restarts``): the
  restarts contain the single run. Pass `pgd_1` (per-example correctness of that
  single run, key ``fold_in(key, 1)``) when already computed.
  """
  kw = dict(norm=norm, eps=eps, batch_size=batch_size)
  clean = correct(apply_fn, params, x, y)
  res = {
    "pgd": attack_correct(
      apply_fn,
      params,
      x,
      y,
      method="pgd",
      steps=pgd_steps,
      restarts=pgd_restarts,
      key=jax.random.fold_in(key, 1),
      **kw,
    ),
    "pgd_1": pgd_1
    if pgd_1 is not None
    else attack_correct(
      apply_fn,
      params,
      x,
      y,
      method="pgd",
      steps=pgd_steps,
      restarts=1,
      key=jax.random.fold_in(key, 1),
      **kw,
    ),
    "apgd_ce": attack_correct(
      apply_fn,
      params,
      x,
      y,
      method="apgd",
      steps=apgd_steps,
      loss="ce",
      key=jax.random.fold_in(key, 2),
      **kw,
    ),
    "apgd_dlr": attack_correct(
      apply_fn,
      params,
      x,
      y,
      method="apgd",
      steps=apgd_steps,
      loss="dlr",
      key=jax.random.fold_in(key, 3),
      **kw,
    ),
  }
  worst = clean & res["pgd"] & res["pgd_1"] & res["apgd_ce"] & res["apgd_dlr"]
  out = {
    "norm": norm,
    "eps": eps,
    "n": int(len(y)),
    "clean": float(clean.mean()),
    **{k: float(v.mean()) for k, v in res.items()},
    "worst": float(worst.mean()),
    "pgd_steps": pgd_steps,
    "pgd_restarts": pgd_restarts,
    "apgd_steps": apgd_steps,
  }
  out["sanity_restarts_never_help_model"] = bool(out["pgd"] <= out["pgd_1"])
  return out


def monotone_nonincreasing(values: list[float], *, slack: float = 0.0) -> bool:
  """Whether `values` never rise by more than `slack`."""
  return all(b <= a + slack for a, b in zip(values, values[1:], strict=False))


# ----------------------------------------------------------------------------- I/O


def environment() -> dict:
  """Where a run ran: backend, devices, CPU count, JAX version."""
  return {
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "jax": jax.__version__,
    "python": sys.version.split()[0],
  }


def jsonable(value: Any) -> Any:
  """`value` with arrays as lists, tuples as lists and non-finite floats as strings."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value).tolist()
    return jsonable(value) if isinstance(value, list) else value
  if isinstance(value, float) and not np.isfinite(value):
    return str(value)
  return value


def write_json(path: str, record: dict) -> None:
  """Writes `record` as indented JSON (creating the directory)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(jsonable(record), f, indent=1)
  print(f"wrote {path}")


def read_metrics(workdir: str) -> list[dict]:
  """The records of a run's ``metrics.jsonl``."""
  return training.read_metrics(workdir)


def setup_matplotlib():
  """Headless matplotlib's pyplot."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  return plt
