"""Hoffman, Roberts, Yaida 2019 (arXiv:1908.02729) on MNIST: Table 1, Figures 1-3, and the
effect of amortized Jacobian regularization.

Subcommands (each writes ``experiments/results/hoffman_<name>.json`` and, where it
has one, ``experiments/figures/hoffman_<name>.png``):

* ``table1``: LeNet' without regularization, with L2, dropout, Jacobian
  regularization (``lambda_JR = 0.01``, one random projection) and all combined;
  test accuracy and mean ``||J||_F`` (``experiments/configs/hoffman.py``).
* ``estimators`` (Figure 2): exact vs random-projection (``n_proj`` = 1, 3)
  Jacobian regularization, accuracy and test ``||J||_F`` over training, mean and
  spread over 3 seeds (``experiments/configs/hoffman_fig2.py``).
* ``worst_case``: robust accuracy at ``eps_inf = 0.1`` and ``eps_2 = 1.0`` with
  ``jaxjac.evaluate(suite="standard")`` (AutoAttack's APGD-CE, APGD-T, FAB-T,
  Square as a cascade; 100 iterations, 5000 queries) and its sanity report, with
  standard errors.
* ``robustness`` (Figure 3): accuracy vs white-noise std, FGSM eps, PGD eps
  (l_inf, l_2; ``suite="fast"``: each attack on every example, independent
  curves) for the Table-1 models plus adversarial training and JR + AT, and
  each model's ``worst_case``.
* ``decision_cells`` (Figure 1): 2-D cross-sections of input space through test
  points (a random plane and an adversarial one), coloured by predicted class,
  for the no-regularization, L2 and JR models.
* ``amortized``: the Table-1 JR training with the penalty on a fraction of each
  batch (``jr_frac2``, ``jr_frac4``) or every k steps (``jr_every2/4/8``) against
  full JR, over ``--seeds`` seeds: test accuracy, final ``||J||_F`` and the seed
  spread (``--worst`` adds the worst case; ``--apgd N`` APGD-CE alone on N images).

Training runs go to ``runs/experiments/hoffman/<model>[_s<seed>]`` with checkpoints;
rerunning a subcommand resumes an interrupted run and reuses finished ones.

Run::

  python experiments/hoffman.py table1 --data_dir /path/to/mnist
  python experiments/hoffman.py worst_case --models none jr --data_dir /path/to/mnist
  python experiments/hoffman.py robustness --data_dir /path/to/mnist
  python experiments/hoffman.py amortized --data_dir /path/to/mnist
  python experiments/hoffman.py table1 --tiny --out /tmp/res --workdir /tmp/runs

``--tiny`` runs every config's ``:NAME,tiny`` variant (a small MLP, a few steps,
a few examples, 3-iteration attacks) to keep the script working; its numbers mean
nothing.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxjac
from jaxjac import attacks, training
from jaxjac.robustness import AttackSpec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402
import plots  # noqa: E402

# Second-hand Table 1 of Hoffman et al. (test accuracy %, test ||J||_F); see SCIENCE.md.
PAPER_TABLE1 = {
  "none": (98.9, 32.9),
  "l2": (99.2, 4.6),
  "dropout": (98.6, 21.5),
  "jr": (99.0, 1.1),
  "all": (99.1, 1.2),
}


def _paths(args, name: str) -> tuple[str, str]:
  return (
    os.path.join(args.out, f"hoffman_{name}.json"),
    os.path.join(args.figures, f"hoffman_{name}.png"),
  )


def _model(args, name: str, dataset, *, seed: int = 0):
  """Trains (or restores) model `name` of ``configs/hoffman.py`` with `seed`."""
  config = common.get_config("hoffman", f"{name},seed{seed}", tiny=args.tiny)
  run = name if seed == 0 else f"{name}_s{seed}"
  workdir = os.path.join(args.workdir, "hoffman", run)
  state, summary, seconds = common.train_or_restore(config, workdir, dataset=dataset)
  return config, state, summary, seconds, workdir


def _cached(path: str, **key):
  """The record at `path` if its fields equal `key` (the settings it was made with)."""
  rec = common.read_json(path)
  if rec is not None and all(rec.get(k) == v for k, v in key.items()):
    return rec
  return None


# ----------------------------------------------------------------------------- table 1


def _norm_row(args, name: str, dataset, *, seed: int = 0) -> dict:
  """Test accuracy (all test images) and exact Jacobian norms of a trained model."""
  config, state, summary, seconds, workdir = _model(args, name, dataset, seed=seed)
  _, _, test_x, test_y = common.train_data(config, dataset)
  params = {"params": state.params}
  idx = common.subset(len(test_y), args.jac_test, seed=0)
  norms = common.jacobian_norms(state.apply_fn, params, test_x[idx])
  return {
    "model": name,
    "seed": seed,
    "test_accuracy": common.accuracy(state.apply_fn, params, test_x, test_y),
    "num_test": int(len(test_y)),
    "jacobian_fro": norms["jacobian_fro"],
    "jacobian_fro_std": norms["jacobian_fro_std"],
    "jacobian_l11": norms["jacobian_l11"],
    "jacobian_num_test": norms["n"],
    "jac_test": args.jac_test,
    "train_seconds": seconds,
    "steps": summary["step"],
    "epochs": summary["epochs"],
    "final_train": summary["train"],
    "heldout_jacobian_fro_curve": [
      (r["step"], r["heldout_jacobian_fro"])
      for r in training.read_metrics(workdir)
      if r["kind"] == "heldout"
    ],
    "config": config.to_dict(),
  }


def _table1_row(args, name: str, dataset) -> dict:
  """Trains (or restores) Table-1 model `name` and evaluates it; cached per model.
  With ``--long`` the model is ``<name>_long`` (the longer SGD budget)."""
  suffix = "_long" if args.long else ""
  cache = os.path.join(args.workdir, f"hoffman_table1{suffix}", f"{name}.json")
  row = _cached(cache, jac_test=args.jac_test)
  if row is None:
    row = _norm_row(args, name + suffix, dataset)
    row["model"] = name
    row["paper_test_accuracy"], row["paper_jacobian_fro"] = PAPER_TABLE1[name]
    common.write_json(cache, row)
  return row


def table1(args) -> dict:
  """Trains the Table-1 models; test accuracy (all test images) and mean ||J||_F.

  With ``--models`` only those are trained now; the table holds every model
  evaluated so far.
  """
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data(args)
  for name in args.models or hconf.TABLE1:
    row = _table1_row(args, name, dataset)
    print(
      f"{name:8s} acc {row['test_accuracy']:.4f}  ||J||_F {row['jacobian_fro']:.3f}  "
      f"({row['train_seconds']:.0f} s)",
      flush=True,
    )
  rows = {}
  suffix = "_long" if args.long else ""
  for name in hconf.TABLE1:
    row = common.read_json(os.path.join(args.workdir, f"hoffman_table1{suffix}", f"{name}.json"))
    if row is not None:
      rows[name] = row
  record = common.record("hoffman_table1", args, dataset) | {
    "rows": rows,
    "missing": [m for m in hconf.TABLE1 if m not in rows],
  }
  if "none" in rows and "jr" in rows:
    ratio = rows["none"]["jacobian_fro"] / rows["jr"]["jacobian_fro"]
    record["jr_norm_reduction_vs_none"] = ratio
    record["criteria"] = {
      "jr_accuracy_ge_0.989": rows["jr"]["test_accuracy"] >= 0.989,
      "jr_norm_10x_smaller": ratio >= 10.0,
    }
  record["budget"] = "long" if args.long else "short"
  json_path, fig_path = _paths(args, "table1" + suffix)
  common.write_json(json_path, record)
  plots.table1(rows, fig_path)
  return record


# ----------------------------------------------------------------------------- figure 2


def estimators(args) -> dict:
  """Figure 2: exact vs projection JR over training, mean and std over seeds."""
  fconf = common.load_config_module("hoffman_fig2")
  dataset = common.load_data(args)
  runs = {}
  for name in args.models or fconf.ESTIMATORS:
    runs[name] = []
    for seed in range(args.seeds):
      config = common.get_config("hoffman_fig2", f"{name},seed{seed}", tiny=args.tiny)
      workdir = os.path.join(args.workdir, "hoffman_fig2", f"{name}_s{seed}")
      state, _, seconds = common.train_or_restore(config, workdir, dataset=dataset)
      _, _, test_x, test_y = common.train_data(config, dataset)
      params = {"params": state.params}
      idx = common.subset(len(test_y), args.jac_test, seed=0)
      metrics = training.read_metrics(workdir)
      runs[name].append(
        {
          "seed": seed,
          "train_seconds": seconds,
          "heldout_jacobian_fro": [
            (r["step"], r["heldout_jacobian_fro"]) for r in metrics if r["kind"] == "heldout"
          ],
          "test_accuracy": [
            (r["step"], r["test_accuracy"]) for r in metrics if r["kind"] == "epoch"
          ],
          "final_test_accuracy": common.accuracy(state.apply_fn, params, test_x, test_y),
          "final_jacobian_fro": training.jacobian_frobenius_norm(
            state.apply_fn, params, test_x[idx], batch_size=250
          ),
          "num_test": int(len(test_y)),
          "jacobian_num_test": int(len(idx)),
        }
      )
      print(
        f"{name:6s} seed {seed}: acc {runs[name][-1]['final_test_accuracy']:.4f} "
        f"||J||_F {runs[name][-1]['final_jacobian_fro']:.3f} ({seconds:.0f} s)",
        flush=True,
      )
  summary = common.seed_summary(
    runs, ("final_test_accuracy", "final_jacobian_fro", "train_seconds")
  )
  record = common.record(
    "hoffman_estimators", args, dataset, seeds=args.seeds,
    config=common.get_config("hoffman_fig2", "proj1,seed0", tiny=args.tiny).to_dict(),
    summary=summary, runs=runs,
  )  # fmt: skip
  json_path, fig_path = _paths(args, "estimators")
  common.write_json(json_path, record)
  plots.estimators(runs, args.seeds, fig_path)
  return record


# ----------------------------------------------------------------------------- figure 3

NOISE_SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
FGSM_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
PGD_EPS = {"linf": (0.05, 0.1, 0.2, 0.3, 0.5), "l2": (0.5, 1.0, 2.0, 3.0, 6.0)}
WORST_EPS = {"linf": 0.1, "l2": 1.0}
CURVE_STEPS = 10


def _worst_model(args, name: str, dataset, *, seed: int = 0) -> dict:
  """Worst case of model `name` at :data:`WORST_EPS` on ``--num_worst`` test images
  (``suite="standard"``), evaluated in a random order in chunks of ``--chunk``
  images, each image's outcome cached in ``<workdir>/hoffman_worst/<run>/``
  (resumable; ``--max_chunks`` new chunks per call). An unfinished evaluation is
  summarized over the images done first in that order (``num_done``): a uniform
  random sample of the test set."""
  strength = common.attack_strength(args)
  run = name if seed == 0 else f"{name}_s{seed}"
  config, state, _, seconds, _ = _model(args, name, dataset, seed=seed)
  _, _, test_x, test_y = common.train_data(config, dataset)
  idx = common.subset(len(test_y), args.num_worst, seed=1)
  order = np.random.default_rng([1, 0x0DE5]).permutation(idx)
  merged = common.evaluate_worst_chunked(
    state.apply_fn, {"params": state.params}, test_x, test_y, order, WORST_EPS,
    key=jax.random.fold_in(jax.random.key(2019), 2), **strength, chunk=args.chunk,
    cache_dir=os.path.join(args.workdir, "hoffman_worst", run),
    max_chunks=None if args.max_chunks < 0 else args.max_chunks,
    model_id=common.params_fingerprint(state.params),
  )  # fmt: skip
  return {
    "model": name,
    "seed": seed,
    "num_worst": int(len(idx)),
    **strength,
    "suite": "standard",
    "train_seconds": seconds,
    **merged,
    "environment": common.environment(),
  }


def _apgd_model(args, name: str, dataset, *, seed: int = 0) -> dict:
  """APGD-CE alone (``--steps`` iterations, one start) at :data:`WORST_EPS` on ``--apgd``
  test images: robust accuracy per norm and its standard error. An upper bound on
  the standard suite's worst case, at a small part of its cost."""
  steps = common.attack_strength(args)["steps"]
  run = name if seed == 0 else f"{name}_s{seed}"
  cache = os.path.join(args.workdir, "hoffman_apgd", f"{run}.json")
  config, state, _, _, _ = _model(args, name, dataset, seed=seed)
  _, _, test_x, test_y = common.train_data(config, dataset)
  idx = common.subset(len(test_y), args.apgd, seed=1)
  out = _cached(cache, num=int(len(idx)), steps=steps)
  if out is not None:
    return out
  t0 = time.perf_counter()
  specs = tuple(
    AttackSpec(f"apgd-ce-{norm}", "apgd", norm, (eps,), steps, loss="ce")
    for norm, eps in WORST_EPS.items()
  )
  report = jaxjac.evaluate(
    state.apply_fn, {"params": state.params}, test_x[idx], test_y[idx],
    key=jax.random.fold_in(jax.random.key(2019), 3), suite="fast", attacks=specs,
    noise_stds=(), batch_size=min(len(idx), 250), sanity=False, progress=False,
  )  # fmt: skip
  out = {"num": int(len(idx)), "steps": steps}
  for norm in WORST_EPS:
    acc = float(report["attacks"][f"apgd-ce-{norm}"]["accuracy"][0])
    out[norm] = acc
    out[f"{norm}_se"] = common.standard_error(acc, len(idx))
  out["eval_seconds"] = time.perf_counter() - t0
  common.write_json(cache, out)
  return out


def worst_case(args) -> dict:
  """Robust accuracy (standard suite) of ``--models`` (default: ``none`` and ``jr``)."""
  dataset = common.load_data(args)
  models = {}
  for name in args.models or ("none", "jr"):
    models[name] = _worst_model(args, name, dataset)
    if not models[name]["num_done"]:
      print(f"{name:8s} no evaluated chunk yet", flush=True)
      del models[name]
      continue
    w = models[name]["worst"]
    print(
      f"{name:8s} clean {w['linf']['clean']:.3f}  worst linf {w['linf']['worst']:.3f} "
      f"+- {w['linf']['worst_se']:.3f}  l2 {w['l2']['worst']:.3f} +- {w['l2']['worst_se']:.3f}  "
      f"({models[name]['num_done']}/{models[name]['num_total']} images, "
      f"{models[name]['eval_seconds']:.0f} s)",
      flush=True,
    )
  # Merge with the models evaluated earlier at the same settings.
  json_path, _ = _paths(args, "worst_case")
  old = common.read_json(json_path) or {}
  strength = common.attack_strength(args)
  same = {"num_worst": args.num_worst, **strength}
  if all(old.get(k) == v for k, v in same.items()):
    models = {**old.get("models", {}), **models}
  record = common.record("hoffman_worst_case", args, dataset) | {
    "num_worst": args.num_worst,
    **strength,
    "suite": "standard (APGD-CE, APGD-T, FAB-T, Square; cascade)",
    "worst_eps": WORST_EPS,
    "models": models,
  }
  common.write_json(json_path, record)
  return record


def _curves_model(args, name: str, dataset, key) -> dict:
  """Curves of model `name` on ``--num_test`` images (``suite="fast"``: white noise,
  FGSM, PGD-CE over eps, each attack on every example); cached per model."""
  cache = os.path.join(args.workdir, "hoffman_curves", f"{name}.json")
  config, state, _, _, _ = _model(args, name, dataset)
  _, _, test_x, test_y = common.train_data(config, dataset)
  idx = common.subset(len(test_y), args.num_test, seed=1)
  steps = 3 if args.tiny else CURVE_STEPS
  out = _cached(cache, num_test=int(len(idx)), curve_steps=steps)
  if out is not None:
    return out
  t0 = time.perf_counter()
  fn, params = state.apply_fn, {"params": state.params}
  specs = common.curve_specs(PGD_EPS, steps=steps, fgsm_eps=FGSM_EPS[1:])
  curves = jaxjac.evaluate(
    fn, params, test_x[idx], test_y[idx], key=jax.random.fold_in(key, 1), suite="fast",
    attacks=specs, noise_stds=NOISE_SIGMAS[1:], batch_size=min(len(idx), 250), sanity=False,
    progress=False,
  )  # fmt: skip
  out = {
    "model": name,
    "num_test": int(len(idx)),
    "curve_steps": steps,
    "clean_accuracy_full_test": common.accuracy(fn, params, test_x, test_y),
    "num_test_full": int(len(test_y)),
    "noise": [(0.0, curves["clean_accuracy"])]
    + list(zip(curves["noise"]["std"], curves["noise"]["accuracy"], strict=True)),
    "fgsm_linf": common.curve(curves, "fgsm-linf"),
    "pgd_linf": common.curve(curves, "pgd-linf"),
    "pgd_l2": common.curve(curves, "pgd-l2"),
    "eval_seconds": time.perf_counter() - t0,
  }
  common.write_json(cache, out)
  return out


def robustness(args) -> dict:
  """Figure 3: robustness curves and worst-case robust accuracy of the seven models."""
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data(args)
  key = jax.random.key(2019)
  models = {}
  for name in args.models or hconf.FIGURE3:
    models[name] = _curves_model(args, name, dataset, key)
    models[name]["worst"] = _worst_model(args, name, dataset)["worst"]
    w = models[name]["worst"]
    print(
      f"{name:8s} clean {models[name]['clean_accuracy_full_test']:.4f}  worst linf "
      f"{w['linf']['worst']:.3f}  l2 {w['l2']['worst']:.3f}",
      flush=True,
    )
  record = common.record("hoffman_robustness", args, dataset) | {
    "num_test": args.num_test,
    "num_worst": args.num_worst,
    "curve_attack": {
      "suite": "fast (each attack on every example)",
      "pgd_steps": 3 if args.tiny else CURVE_STEPS,
      "restarts": 1,
      "relative_step": "2.5 / steps",
      "loss": "ce",
    },
    "worst_attacks": "standard suite: APGD-CE, APGD-T, FAB-T, Square (cascade)",
    **common.attack_strength(args),
    "worst_eps": WORST_EPS,
    "models": models,
  }
  json_path, fig_path = _paths(args, "robustness")
  common.write_json(json_path, record)
  plots.robustness(models, args.num_test, fig_path)
  return record


# ----------------------------------------------------------------------------- figure 1

CELL_MODELS = ("none", "l2", "jr")


@functools.partial(jax.jit, static_argnums=0)
def _plane_classes(apply_fn, params, x0, u, v, ts):
  """Predicted classes on the grid ``x0 + a u + b v``, ``a, b`` in `ts` (not clipped)."""
  a, b = jnp.meshgrid(ts, ts, indexing="xy")
  pts = (
    x0[None, None]
    + a[..., None, None, None] * u[None, None]
    + b[..., None, None, None] * v[None, None]
  )
  flat = pts.reshape(-1, *x0.shape)
  return jnp.argmax(apply_fn(params, flat), -1).reshape(a.shape)


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.linalg.norm(v)


def _orthogonal(v: jax.Array, u: jax.Array) -> jax.Array:
  return _unit(v - jnp.vdot(v, u) * u)


def decision_cells(args) -> dict:
  """Figure 1: cross-sections of input space through test points, coloured by class.

  For each test point, a random plane (two orthonormal Gaussian directions, the
  same for every model) and an adversarial plane (the model's l_2 PGD direction
  and a random orthogonal one); the grid spans ``[-R, R]^2`` in l_2 units and is
  not clipped to the pixel box. Reported: the distance from the point to the
  nearest grid point of another class, per plane and model, for ``--cell_points``
  test points (the figure shows the first two), with its median over points.
  """
  dataset = common.load_data(args)
  res = 21 if args.tiny else 61
  radius = 10.0
  ts = jnp.linspace(-radius, radius, res)
  key = jax.random.key(1908)
  models = {}
  for name in args.models or CELL_MODELS:
    config, state, _, _, _ = _model(args, name, dataset)
    models[name] = (config, state)
  _, _, test_x, test_y = common.train_data(next(iter(models.values()))[0], dataset)
  points = [int(i) for i in common.subset(len(test_y), args.cell_points, seed=3)]
  d = int(np.prod(test_x.shape[1:]))
  aa, bb = np.meshgrid(np.asarray(ts), np.asarray(ts), indexing="xy")
  radii = np.sqrt(aa**2 + bb**2)
  cells, summary = {}, {}
  for pi, i in enumerate(points):
    x0, y0 = jnp.asarray(test_x[i]), int(test_y[i])
    ku, kv, kw = jax.random.split(jax.random.fold_in(key, pi), 3)
    u = _unit(jax.random.normal(ku, x0.shape))
    v = _orthogonal(jax.random.normal(kv, x0.shape), u)
    w = jax.random.normal(kw, x0.shape)
    for name, (_, state) in models.items():
      fn, params = state.apply_fn, {"params": state.params}
      x_adv = attacks.pgd(
        fn, params, x0[None], jnp.asarray([y0]), eps=3.0, norm="l2", steps=20, key=kw, select="loss"
      )[0]
      a = _unit(x_adv - x0)
      planes = {"random": (u, v), "adversarial": (a, _orthogonal(w, a))}
      for plane, (p1, p2) in planes.items():
        cls = np.asarray(_plane_classes(fn, params, x0, p1, p2, ts))
        center = int(np.asarray(_plane_classes(fn, params, x0, p1, p2, jnp.zeros(1)))[0, 0])
        other = cls != center
        dist = float(radii[other].min()) if other.any() else float("inf")
        cells[f"{pi}/{name}/{plane}"] = cls
        summary.setdefault(name, {}).setdefault(plane, []).append(
          {
            "test_index": i,
            "label": y0,
            "center_class": center,
            "distance_to_other_class": dist,
            "fraction_same_class": float(1 - other.mean()),
          }
        )
  record = common.record("hoffman_decision_cells", args, dataset) | {
    "radius_l2": radius,
    "grid": res,
    "input_dim": d,
    "test_indices": points,
    "summary": summary,
    "statistics": {
      name: {
        plane: {
          "median_distance_to_other_class": float(
            np.median([p["distance_to_other_class"] for p in pts])
          ),
          "fraction_no_other_class_in_grid": float(
            np.mean([p["distance_to_other_class"] == float("inf") for p in pts])
          ),
          "mean_fraction_same_class": float(np.mean([p["fraction_same_class"] for p in pts])),
          "points": len(pts),
        }
        for plane, pts in planes.items()
      }
      for name, planes in summary.items()
    },
  }
  json_path, fig_path = _paths(args, "decision_cells")
  common.write_json(json_path, record)
  plots.decision_cells(cells, list(models), min(2, len(points)), radius, fig_path)
  return record


# ----------------------------------------------------------------------------- amortized JR


def amortized(args) -> dict:
  """Sub-batch and lazy JR against full JR, ``--seeds`` seeds of the Table-1 budget
  (full JR: ``max(--seeds, --jr_seeds)`` seeds, so that its spread can rest on more).

  An option's effect counts as equal to full JR's where its mean test accuracy and
  mean ``||J||_F`` lie within full JR's mean +- 2 std over seeds.
  """
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data(args)
  names = ["jr"] + list(args.models or hconf.AMORTIZED)
  rows = {}
  jr_seeds = max(args.seeds, args.jr_seeds)
  for seed in range(jr_seeds):  # seed-major: every option gets seed 0 first
    for name in names:
      if seed >= args.seeds and name != "jr":
        continue  # --jr_seeds > --seeds: more seeds for the full-JR reference only
      cache = os.path.join(args.workdir, "hoffman_amortized", f"{name}_s{seed}.json")
      row = _cached(cache, jac_test=args.jac_test)
      if row is None:
        row = _norm_row(args, name, dataset, seed=seed)
        if args.worst:
          row["worst"] = _worst_model(args, name, dataset, seed=seed)["worst"]
        common.write_json(cache, row)
      apgd = {"num": args.apgd, "steps": common.attack_strength(args)["steps"]}
      if args.apgd and {k: row.get("apgd", {}).get(k) for k in apgd} != apgd:
        row["apgd"] = _apgd_model(args, name, dataset, seed=seed)
        common.write_json(cache, row)
      rows.setdefault(name, []).append(row)
      print(
        f"{name:10s} seed {seed}: acc {row['test_accuracy']:.4f} ||J||_F "
        f"{row['jacobian_fro']:.3f} ({row['train_seconds']:.0f} s)",
        flush=True,
      )
  summary = common.seed_summary(rows, ("test_accuracy", "jacobian_fro", "train_seconds"))
  for name, rs in rows.items():
    if all("worst" in r for r in rs):
      for norm in WORST_EPS:
        summary[name][f"worst_{norm}"] = common.spread([r["worst"][norm]["worst"] for r in rs])
    if args.apgd and all("apgd" in r for r in rs):
      for norm in WORST_EPS:
        summary[name][f"apgd_{norm}"] = common.spread([r["apgd"][norm] for r in rs])
  full = summary["jr"]
  for s in summary.values():
    s["within_2std_of_full_jr"] = {
      k: bool(abs(s[k]["mean"] - full[k]["mean"]) <= 2 * full[k]["std"])
      for k in ("test_accuracy", "jacobian_fro", "apgd_linf", "apgd_l2")
      if k in s and k in full
    }
  runs = {n: [{k: v for k, v in r.items() if k != "config"} for r in rs] for n, rs in rows.items()}
  record = common.record(
    "hoffman_amortized", args, dataset, seeds=args.seeds, jr_seeds=jr_seeds,
    jacobian_num_test=args.jac_test,
    summary=summary, runs=runs,
  )  # fmt: skip
  json_path, fig_path = _paths(args, "amortized")
  common.write_json(json_path, record)
  plots.amortized(summary, fig_path)
  return record


# ----------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- figure 3 (base)

FIG3_EPS = {"linf": (0.05, 0.1, 0.15, 0.2, 0.3), "l2": (0.5, 1.0, 1.5, 2.0, 3.0)}
FIG3_NOISE = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)


def _apgd_pair(norm: str, eps: float, steps: int, targets: int) -> tuple[AttackSpec, ...]:
  return (
    AttackSpec(f"apgd-ce-{norm}", "apgd", norm, (eps,), steps, loss="ce"),
    AttackSpec(f"apgd-t-{norm}", "apgd-t", norm, (eps,), steps, num_targets=targets),
  )


def _fig3_curve(args, fn, params, x, y, idx, correct, norm, key, settings, cache_dir):
  """Robust accuracy of APGD-CE + APGD-T over ``FIG3_EPS[norm]`` as a cascade over radii:
  an image broken at a radius is broken at every larger one (its adversarial example
  lies in the larger ball), so each radius attacks only the images robust at the one
  before. Every radius is cached (``<cache_dir>/<norm>_<eps>.json``)."""
  robust = idx[correct]
  points, counts = [], {}
  for k, eps in enumerate(FIG3_EPS[norm]):
    path = os.path.join(cache_dir, f"{norm}_{eps}.json")
    rec = _cached(path, **settings, eps=eps)
    if rec is None:
      t0 = time.perf_counter()
      still = np.zeros(0, bool)
      if len(robust):
        report = jaxjac.evaluate(
          fn, params, x[robust], y[robust], key=jax.random.fold_in(key, k), suite="standard",
          attacks=_apgd_pair(norm, eps, settings["steps"], settings["num_targets"]),
          noise_stds=(), batch_size=min(len(robust), 250), sanity=False, progress=False,
          return_per_example=True,
        )  # fmt: skip
        still = np.asarray(report["per_example"]["worst_case"][norm]["robust"][0], bool)
      rec = {**settings, "eps": eps, "attacked": robust.tolist(),
             "robust": robust[still].tolist(), "seconds": time.perf_counter() - t0}  # fmt: skip
      common.write_json(path, rec)
    robust = np.asarray(rec["robust"], dtype=int)
    points.append((eps, len(robust) / len(idx)))
    counts[str(eps)] = len(robust)
  return points, robust


def _fig3_confirm(args, fn, params, x, y, robust_at, norm, key, settings, cache_dir):
  """FAB-T and Square (the rest of the standard suite) at ``WORST_EPS[norm]`` on the
  images of the first ``--confirm`` that APGD-CE + APGD-T left robust there: the
  images they break (APGD-CE + APGD-T was then not the worst case)."""
  eps = WORST_EPS[norm]
  first = set(settings["indices"][: args.confirm])
  todo = np.asarray([i for i in robust_at if i in first], dtype=int)
  path = os.path.join(cache_dir, f"confirm_{norm}_{eps}.json")
  rec = _cached(path, **settings, eps=eps, confirm=args.confirm)
  if rec is None:
    t0 = time.perf_counter()
    broken = []
    if len(todo):
      steps, queries = settings["steps"], common.attack_strength(args)["queries"]
      specs = (
        AttackSpec(f"fab-t-{norm}", "fab-t", norm, (eps,), steps, num_targets=9),
        AttackSpec(f"square-{norm}", "square", norm, (eps,), queries=queries),
      )
      report = jaxjac.evaluate(
        fn, params, x[todo], y[todo], key=jax.random.fold_in(key, 99), suite="standard",
        attacks=specs, noise_stds=(), batch_size=min(len(todo), 250), sanity=False,
        progress=False, return_per_example=True,
      )  # fmt: skip
      still = np.asarray(report["per_example"]["worst_case"][norm]["robust"][0], bool)
      broken = todo[~still].tolist()
    rec = {**settings, "eps": eps, "confirm": args.confirm, "attacked": todo.tolist(),
           "broken": broken, "seconds": time.perf_counter() - t0}  # fmt: skip
    common.write_json(path, rec)
  return {
    "eps": eps,
    "num_images": min(args.confirm, len(settings["indices"])),
    "num_attacked": len(rec["attacked"]),
    "broken_by_fab_or_square": rec["broken"],
  }


def _fig3_model(args, name: str, dataset, seed: int) -> dict:
  """White-noise and APGD-CE + APGD-T curves of one Figure-3 model on ``--num_test``
  images; with ``seed < --confirm_seeds`` the rest of the standard suite at
  :data:`WORST_EPS` on the first ``--confirm`` of them."""
  run = name if seed == 0 else f"{name}_s{seed}"
  config, state, _, seconds, _ = _model(args, name, dataset, seed=seed)
  _, _, test_x, test_y = common.train_data(config, dataset)
  idx = common.subset(len(test_y), args.num_test, seed=1)
  fn, params = state.apply_fn, {"params": state.params}
  steps = common.attack_strength(args)["steps"]
  targets = 3 if args.tiny else args.targets
  settings = {"model": common.params_fingerprint(state.params), "steps": steps,
              "num_targets": targets, "indices": idx.tolist()}  # fmt: skip
  cache_dir = os.path.join(args.workdir, "hoffman_fig3", run)
  key = jax.random.fold_in(jax.random.key(2019), 1000 + seed)
  base = _cached(os.path.join(cache_dir, "noise.json"), **settings)
  if base is None:
    t0 = time.perf_counter()
    report = jaxjac.evaluate(
      fn, params, test_x[idx], test_y[idx], key=key, suite="fast", attacks=(),
      noise_stds=FIG3_NOISE, batch_size=min(len(idx), 250), sanity=False, progress=False,
      return_per_example=True,
    )  # fmt: skip
    base = {**settings, "clean": report["per_example"]["clean"],
            "noise": list(zip(report["noise"]["std"], report["noise"]["accuracy"], strict=True)),
            "clean_accuracy_full_test": common.accuracy(fn, params, test_x, test_y),
            "seconds": time.perf_counter() - t0}  # fmt: skip
    common.write_json(os.path.join(cache_dir, "noise.json"), base)
  correct = np.asarray(base["clean"], bool)
  out = {
    "model": name,
    "seed": seed,
    "train_seconds": seconds,
    "clean_accuracy_full_test": base["clean_accuracy_full_test"],
    "clean": float(correct.mean()),
    "noise": [(0.0, float(correct.mean()))] + [tuple(p) for p in base["noise"]],
  }
  for i, norm in enumerate(FIG3_EPS):
    nkey = jax.random.fold_in(key, 10 + i)
    curve, _ = _fig3_curve(
      args, fn, params, test_x, test_y, idx, correct, norm, nkey, settings, cache_dir
    )
    out[f"apgd_{norm}"] = [(0.0, float(correct.mean()))] + curve
    if seed < args.confirm_seeds and args.confirm:
      at = _cached(os.path.join(cache_dir, f"{norm}_{WORST_EPS[norm]}.json"), **settings)
      out[f"confirm_{norm}"] = _fig3_confirm(
        args, fn, params, test_x, test_y, at["robust"], norm, nkey, settings, cache_dir
      )
  return out


def _mean_se(curves: list[list]) -> list[tuple[float, float, float]]:
  """Per x: the mean over seeds and its standard error (std over seeds / sqrt(seeds))."""
  xs = [p[0] for p in curves[0]]
  ys = np.asarray([[p[1] for p in c] for c in curves], float)
  se = ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros(len(xs))
  return [(float(x), float(m), float(s)) for x, m, s in zip(xs, ys.mean(0), se, strict=True)]


def figure3(args) -> dict:
  """Figure 3 on the paper's base (L2 and dropout under every model): base, base + JR,
  base + AT, base + JR + AT, ``--seeds`` seeds each; white-noise curves and APGD-CE +
  APGD-T curves over l_inf and l_2 radii on ``--num_test`` test images, mean and
  standard error over seeds; the rest of the standard suite at one radius per norm on
  the first ``--confirm`` images of the first ``--confirm_seeds`` seeds."""
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data(args)
  runs: dict[str, list[dict]] = {}
  for seed in range(args.seeds):
    for name in args.models or hconf.FIGURE3_BASE:
      rec = _fig3_model(args, name, dataset, seed)
      runs.setdefault(name, []).append(rec)
      print(
        f"{name:11s} s{seed} clean {rec['clean_accuracy_full_test']:.4f}  "
        + "  ".join(f"{k} " + " ".join(f"{a:.3f}" for _, a in rec[k][1:]) for k in
                    ("apgd_linf", "apgd_l2")),
        flush=True,
      )  # fmt: skip
  summary = {
    name: {k: _mean_se([r[k] for r in rs]) for k in ("noise", "apgd_linf", "apgd_l2")}
    | {
      "clean_accuracy_full_test": _mean_se([[(0, r["clean_accuracy_full_test"])] for r in rs])[0],
      "num_seeds": len(rs),
    }  # fmt: skip
    for name, rs in runs.items()
  }
  record = common.record("hoffman_figure3", args, dataset) | {
    "num_test": args.num_test,
    "attack": {
      "curves": "APGD-CE then APGD-T (cascade per radius and over radii)",
      "steps": common.attack_strength(args)["steps"],
      "apgd_t_targets": 3 if args.tiny else args.targets,
      "noise": "one Gaussian draw per image, clipped to the box",
    },  # fmt: skip
    "eps": FIG3_EPS,
    "confirm": {"images": args.confirm, "seeds": args.confirm_seeds, "eps": WORST_EPS},
    "summary": summary,
    "runs": runs,
  }
  json_path, fig_path = _paths(args, "figure3")
  common.write_json(json_path, record)
  plots.figure3(summary, args.num_test, fig_path)
  return record


def train(args) -> dict:
  """Trains (or resumes) ``--models`` for seeds ``0 .. --seeds - 1``, nothing else: the
  runs the other subcommands then restore. Meant for one process per core."""
  dataset = common.load_data(args)
  done = {}
  for seed in range(args.seeds):
    for name in args.models or ():
      _, _, summary, seconds, workdir = _model(args, name, dataset, seed=seed)
      done[os.path.basename(workdir)] = {"step": summary["step"], "train_seconds": seconds}
      print(f"{name} seed {seed}: step {summary['step']} ({seconds:.0f} s)", flush=True)
  return done


SUBCOMMANDS = {
  "train": train,
  "figure3": figure3,
  "table1": table1,
  "estimators": estimators,
  "worst_case": worst_case,
  "robustness": robustness,
  "decision_cells": decision_cells,
  "amortized": amortized,
}


OPTIONS = {
  "--jac_test": (int, 1000, "test images for the mean ||J||_F (0: all)"),
  "--num_test": (int, 500, "test images for the robustness curves"),
  "--num_worst": (int, 1000, "test images for the worst case (0: all 10000)"),
  "--chunk": (int, 100, "images per cached chunk of the worst case"),
  "--max_chunks": (
    int,
    -1,
    "new worst-case chunks per model and call (-1: all; 0: report the cached ones)",
  ),
  "--seeds": (int, 3, "seeds (estimators, amortized)"),
  "--jr_seeds": (int, 0, "amortized: seeds of full JR if more than --seeds"),
  "--worst": (bool, False, "amortized: add the worst case of every run"),
  "--apgd": (int, 0, "amortized: APGD-CE robust accuracy of every run on N test images"),
  "--cell_points": (int, 20, "test points for Figure 1"),
  "--models": (list, None, "models (default: the subcommand's)"),
  "--long": (bool, False, "table1: the longer SGD budget (models NAME_long)"),
  "--targets": (int, 9, "figure3: APGD-T's target classes"),
  "--confirm": (int, 100, "figure3: images for the rest of the standard suite"),
  "--confirm_seeds": (int, 1, "figure3: seeds whose models get that check"),
}
TINY_CAPS = {
  "confirm": 16,
  "jac_test": 64,
  "num_test": 64,
  "num_worst": 64,
  "seeds": 2,
  "cell_points": 2,
}


def main(argv=None) -> dict:
  return common.run(SUBCOMMANDS, common.parse(__doc__, SUBCOMMANDS, argv, OPTIONS, TINY_CAPS))


if __name__ == "__main__":
  main()
