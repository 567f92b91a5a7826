"""Shared plumbing of the experiment scripts: configs, resumable training, evaluation.

Not a public module: ``experiments/hoffman.py`` and ``experiments/wu_li.py``
import it from their own directory.
"""

from __future__ import annotations

import argparse
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
from jaxjac import attacks, training

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


# ----------------------------------------------------------------------------- command line


def parser(doc: str, subcommands: dict) -> argparse.ArgumentParser:
  """The arguments every experiment script takes: a subcommand, --tiny and directories."""
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  p.add_argument("command", choices=sorted(subcommands))
  p.add_argument("--tiny", action="store_true", help="seconds-long variant (tests)")
  p.add_argument("--out", default=None, help="results directory")
  p.add_argument("--figures", default=None, help="figures directory")
  p.add_argument("--workdir", default=None, help="root of the training run directories")
  return p


def resolve_dirs(args: argparse.Namespace) -> argparse.Namespace:
  """Fills the default directories (``runs/experiments/tiny/`` for --tiny) and creates them."""
  tiny_root = os.path.join(RUNS_DIR, "tiny")
  args.out = args.out or (os.path.join(tiny_root, "results") if args.tiny else RESULTS_DIR)
  args.figures = args.figures or (args.out if args.tiny else FIGURES_DIR)
  args.workdir = args.workdir or (tiny_root if args.tiny else RUNS_DIR)
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(args.figures, exist_ok=True)
  return args


def run(subcommands: dict, args: argparse.Namespace) -> dict:
  """Runs ``subcommands[args.command](args)`` and prints its wall time."""
  t0 = time.perf_counter()
  record = subcommands[args.command](args)
  print(f"{args.command}: {time.perf_counter() - t0:.0f} s")
  return record


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


def train_data(config, dataset):
  """The training and test arrays ``train()`` used for `config` (same subsets)."""
  tr, te = training.split_indices(config, dataset)
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


def attack_specs(
  curves: dict[str, tuple[float, ...]],
  worst_eps: dict[str, float] | None = None,
  *,
  steps: int,
  restarts: int = 2,
  apgd_steps: int | None = None,
  fgsm_eps: tuple[float, ...] = (),
) -> tuple:
  """The attacks of a robustness evaluation, as ``jaxjac.attacks.AttackSpec`` entries.

  Per norm: PGD-CE (one random start, ``steps`` steps of ``2.5 eps / steps``) at
  every radius of ``curves[norm]`` (the robustness curve); at ``worst_eps[norm]``
  also PGD-CE with ``restarts`` random restarts, APGD-CE and APGD-DLR
  (``apgd_steps``, default ``steps``), whose per-example worst case is the robust
  accuracy. ``fgsm_eps``: FGSM (l_inf) radii.
  """
  apgd_steps = apgd_steps or steps
  specs = []
  if fgsm_eps:
    specs.append(attacks.AttackSpec("fgsm-linf", "fgsm", "linf", tuple(fgsm_eps), steps=1))
  for norm, eps in curves.items():
    specs.append(attacks.AttackSpec(f"pgd-{norm}", "pgd", norm, tuple(eps), steps, 1, "ce"))
  for norm, e in (worst_eps or {}).items():
    specs += [
      attacks.AttackSpec(f"pgd-restarts-{norm}", "pgd", norm, (e,), steps, restarts, "ce"),
      attacks.AttackSpec(f"apgd-ce-{norm}", "apgd", norm, (e,), apgd_steps, 1, "ce"),
      attacks.AttackSpec(f"apgd-dlr-{norm}", "apgd", norm, (e,), apgd_steps, 1, "dlr"),
    ]
  return tuple(specs)


def curve(report: dict, name: str, *, clean: bool = True) -> list[tuple[float, float]]:
  """``[(eps, accuracy), ...]`` of attack `name` of a ``jaxjac.evaluate`` report,
  starting with ``(0, clean accuracy)`` when `clean`."""
  res = report["attacks"][name]
  pts = list(zip(res["eps"], res["accuracy"], strict=True))
  return ([(0.0, report["clean_accuracy"])] if clean else []) + pts


def worst_summary(report: dict, norm: str, eps: float) -> dict:
  """Per-attack and worst-case robust accuracy at radius `eps` of `norm`.

  Keys: ``pgd_1`` (PGD, one start), ``pgd`` (PGD with restarts), ``apgd_ce``,
  ``apgd_dlr`` and ``worst`` (robust against every attack of `norm` that ran at
  `eps`, from ``report["worst_case"]``), with ``n`` and the attack settings.
  """

  def at(name):
    res = report["attacks"][name]
    return res["accuracy"][res["eps"].index(eps)], res

  names = {
    "pgd_1": f"pgd-{norm}",
    "pgd": f"pgd-restarts-{norm}",
    "apgd_ce": f"apgd-ce-{norm}",
    "apgd_dlr": f"apgd-dlr-{norm}",
  }
  out = {"norm": norm, "eps": eps, "n": report["num_examples"], "clean": report["clean_accuracy"]}
  for key, name in names.items():
    out[key], res = at(name)
    out[f"{key}_steps"], out[f"{key}_restarts"] = res["steps"], res["restarts"]
  wc = report["worst_case"][norm]
  out["worst"] = wc["accuracy"][wc["eps"].index(eps)]
  out["worst_over"] = wc["attacks"]
  return out


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
