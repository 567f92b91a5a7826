"""Hoffman, Roberts, Yaida 2019 (arXiv:1908.02729) on MNIST: Table 1, Figures 1-3.

Subcommands (each writes ``experiments/results/hoffman_<name>.json`` and, where it
has one, ``experiments/figures/hoffman_<name>.png``):

* ``table1``: LeNet' without regularization, with L2, dropout, Jacobian
  regularization (``lambda_JR = 0.01``, one random projection) and all combined;
  test accuracy and mean ``||J||_F`` (``experiments/configs/hoffman.py``).
* ``estimators`` (Figure 2): exact vs random-projection (``n_proj`` = 1, 3)
  Jacobian regularization, accuracy and test ``||J||_F`` over training, mean and
  spread over 3 seeds (``experiments/configs/hoffman_fig2.py``).
* ``robustness`` (Figure 3): accuracy vs white-noise std, FGSM eps, PGD eps
  (l_inf, l_2) for the Table-1 models plus PGD adversarial training and JR + AT,
  and the worst case over PGD (restarts), APGD-CE and APGD-DLR at
  ``eps_inf = 0.1`` and ``eps_2 = 1.0`` with a sanity report.
* ``decision_cells`` (Figure 1): 2-D cross-sections of input space through test
  points (a random plane and an adversarial one), coloured by predicted class,
  for the no-regularization, L2 and JR models.

Training runs go to ``runs/experiments/hoffman/<model>`` with checkpoints;
rerunning a subcommand resumes an interrupted run and reuses finished ones.

Run::

  python experiments/hoffman.py table1
  python experiments/hoffman.py estimators
  python experiments/hoffman.py robustness --num_test 500
  python experiments/hoffman.py decision_cells
  python experiments/hoffman.py table1 --tiny --out /tmp/res --workdir /tmp/runs

``--tiny`` runs every configuration's seconds-long variant (a small MLP, a few
steps, a few examples) to keep the script working; its numbers mean nothing.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxjac
from jaxjac import attacks

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

# Second-hand Table 1 of Hoffman et al. (test accuracy %, test ||J||_F); see SCIENCE.md.
PAPER_TABLE1 = {
  "none": (98.9, 32.9),
  "l2": (99.2, 4.6),
  "dropout": (98.6, 21.5),
  "jr": (99.0, 1.1),
  "all": (99.1, 1.2),
}
LABELS = {
  "none": "No reg.",
  "l2": "L2",
  "dropout": "Dropout",
  "jr": "JR",
  "all": "All",
  "at": "FGSM-RS AT",
  "jr_at": "JR + AT",
}


def _paths(args, name: str) -> tuple[str, str]:
  return (
    os.path.join(args.out, f"hoffman_{name}.json"),
    os.path.join(args.figures, f"hoffman_{name}.png"),
  )


def _model(args, name: str, dataset):
  """Trains (or restores) the Table-1 / Figure-3 model `name`."""
  config = common.get_config("hoffman", name, tiny=args.tiny)
  workdir = os.path.join(args.workdir, "hoffman", name)
  state, summary, seconds = common.train_or_restore(config, workdir, dataset=dataset)
  return config, state, summary, seconds, workdir


# ----------------------------------------------------------------------------- table 1


def _table1_row(args, name: str, dataset) -> dict:
  """Trains (or restores) Table-1 model `name` and evaluates it; cached per model."""
  cache = os.path.join(args.workdir, "hoffman_table1", f"{name}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      row = json.load(f)
    if row["jacobian_num_test"] == args.jac_test or args.jac_test == 0:
      return row
  config, state, summary, seconds, workdir = _model(args, name, dataset)
  _, _, test_x, test_y = common.train_data(config, dataset)
  params = {"params": state.params}
  acc = common.accuracy(state.apply_fn, params, test_x, test_y)
  idx = common.subset(len(test_y), args.jac_test, seed=0)
  norms = common.jacobian_norms(state.apply_fn, params, test_x[idx])
  heldout = [
    (r["step"], r["heldout_jacobian_fro"])
    for r in common.read_metrics(workdir)
    if r["kind"] == "heldout"
  ]
  paper = PAPER_TABLE1[name]
  row = {
    "test_accuracy": acc,
    "num_test": int(len(test_y)),
    "jacobian_fro": norms["jacobian_fro"],
    "jacobian_fro_std": norms["jacobian_fro_std"],
    "jacobian_l11": norms["jacobian_l11"],
    "jacobian_num_test": norms["n"],
    "train_seconds": seconds,
    "steps": summary["step"],
    "epochs": summary["epochs"],
    "final_train": summary["train"],
    "heldout_jacobian_fro_curve": heldout,
    "paper_test_accuracy": paper[0],
    "paper_jacobian_fro": paper[1],
    "config": config.to_dict(),
  }
  common.write_json(cache, row)
  return row


def table1(args) -> dict:
  """Trains the Table-1 models; test accuracy (all test images) and mean ||J||_F.

  With ``--models`` only those are trained now; the table holds every model
  evaluated so far.
  """
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data()
  for name in args.models or hconf.TABLE1:
    row = _table1_row(args, name, dataset)
    print(
      f"{name:8s} acc {row['test_accuracy']:.4f}  ||J||_F {row['jacobian_fro']:.3f}  "
      f"({row['train_seconds']:.0f} s)",
      flush=True,
    )
  rows = {}
  for name in hconf.TABLE1:
    cache = os.path.join(args.workdir, "hoffman_table1", f"{name}.json")
    if os.path.exists(cache):
      with open(cache) as f:
        rows[name] = json.load(f)
  if "none" not in rows or "jr" not in rows:
    return {"rows": rows}
  ratio = rows["none"]["jacobian_fro"] / rows["jr"]["jacobian_fro"]
  record = {
    "experiment": "hoffman_table1",
    "tiny": args.tiny,
    "environment": common.environment(),
    "rows": rows,
    "missing": [m for m in hconf.TABLE1 if m not in rows],
    "jr_norm_reduction_vs_none": ratio,
    "criteria": {
      "jr_accuracy_ge_0.989": rows["jr"]["test_accuracy"] >= 0.989,
      "jr_norm_10x_smaller": ratio >= 10.0,
    },
  }
  json_path, fig_path = _paths(args, "table1")
  common.write_json(json_path, record)
  plt = common.setup_matplotlib()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, row in rows.items():
    steps, vals = zip(*row["heldout_jacobian_fro_curve"], strict=True)
    ax.plot(steps, vals, marker="o", label=LABELS[name])
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("mean ||J||_F (held-out test images)")
  ax.set_title("Table-1 models: Jacobian norm over training")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
  return record


# ----------------------------------------------------------------------------- figure 2


def estimators(args) -> dict:
  """Figure 2: exact vs projection JR over training, mean and std over seeds."""
  fconf = common.load_config_module("hoffman_fig2")
  dataset = common.load_data()
  runs = {}
  for name in args.models or fconf.ESTIMATORS:
    runs[name] = []
    for seed in range(args.seeds):
      config = common.get_config("hoffman_fig2", f"{name},seed{seed}", tiny=args.tiny)
      workdir = os.path.join(args.workdir, "hoffman_fig2", f"{name}_s{seed}")
      state, summary, seconds = common.train_or_restore(config, workdir, dataset=dataset)
      _, _, test_x, test_y = common.train_data(config, dataset)
      params = {"params": state.params}
      idx = common.subset(len(test_y), args.jac_test, seed=0)
      metrics = common.read_metrics(workdir)
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
          "final_jacobian_fro": common.jacobian_norms(state.apply_fn, params, test_x[idx])[
            "jacobian_fro"
          ],
          "num_test": int(len(test_y)),
          "jacobian_num_test": int(len(idx)),
        }
      )
      print(
        f"{name:6s} seed {seed}: acc {runs[name][-1]['final_test_accuracy']:.4f} "
        f"||J||_F {runs[name][-1]['final_jacobian_fro']:.3f} ({seconds:.0f} s)",
        flush=True,
      )
  summary = {}
  for name, rs in runs.items():
    acc = np.array([r["final_test_accuracy"] for r in rs])
    fro = np.array([r["final_jacobian_fro"] for r in rs])
    summary[name] = {
      "test_accuracy_mean": float(acc.mean()),
      "test_accuracy_std": float(acc.std()),
      "jacobian_fro_mean": float(fro.mean()),
      "jacobian_fro_std": float(fro.std()),
      "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs])),
    }
  record = {
    "experiment": "hoffman_estimators",
    "tiny": args.tiny,
    "environment": common.environment(),
    "seeds": args.seeds,
    "config": common.get_config("hoffman_fig2", "proj1,seed0", tiny=args.tiny).to_dict(),
    "summary": summary,
    "runs": runs,
  }
  json_path, fig_path = _paths(args, "estimators")
  common.write_json(json_path, record)

  plt = common.setup_matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for name, rs in runs.items():
    for ax, key in zip(axes, ("test_accuracy", "heldout_jacobian_fro"), strict=True):
      if not rs[0][key]:
        continue
      steps = np.array([s for s, _ in rs[0][key]])
      vals = np.array([[v for _, v in r[key]] for r in rs])
      mean, std = vals.mean(0), vals.std(0)
      ax.plot(steps, mean, marker="o", ms=3, label=name)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
  axes[0].set_ylabel("test accuracy")
  axes[1].set_ylabel("mean ||J||_F (held-out)")
  axes[1].set_yscale("log")
  for ax in axes:
    ax.set_xlabel("training step")
    ax.legend(fontsize=8)
  fig.suptitle(
    f"Exact vs random-projection JR (MLP, mean +- std over {args.seeds} seeds)", fontsize=10
  )
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
  return record


# ----------------------------------------------------------------------------- figure 3

NOISE_SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
FGSM_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
PGD_EPS = {"linf": (0.05, 0.1, 0.2, 0.3, 0.5), "l2": (0.5, 1.0, 2.0, 3.0, 6.0)}
WORST_EPS = {"linf": 0.1, "l2": 1.0}
CURVE_STEPS = 10


def _robust_model(args, name: str, dataset, key) -> dict:
  """Curves (``num_test`` images) and worst case (``num_worst`` images) of model `name`.

  Two ``jaxjac.evaluate`` calls on fixed random test subsets: the curves (white
  noise, FGSM, PGD-CE over eps; their sanity check is monotonicity in eps) and
  the worst case at :data:`WORST_EPS` over PGD (one start and restarts), APGD-CE
  and APGD-DLR, with the full gradient-masking sanity report (more steps, more
  restarts, zero accuracy at a large eps). Cached per model in
  ``<workdir>/hoffman_robust/<name>.json``.
  """
  cache = os.path.join(args.workdir, "hoffman_robust", f"{name}.json")
  config, state, summary, seconds, _ = _model(args, name, dataset)
  if os.path.exists(cache):
    with open(cache) as f:
      out = json.load(f)
    if (out["num_test"], out.get("num_worst")) == (args.num_test, args.num_worst):
      return out
  t0 = time.perf_counter()
  _, _, test_x, test_y = common.train_data(config, dataset)
  fn, params = state.apply_fn, {"params": state.params}
  steps = 3 if args.tiny else CURVE_STEPS
  idx = common.subset(len(test_y), args.num_test, seed=1)
  specs = common.attack_specs(PGD_EPS, steps=steps, fgsm_eps=FGSM_EPS[1:])
  curves = jaxjac.evaluate(
    fn, params, test_x[idx], test_y[idx], key=jax.random.fold_in(key, 1), attacks=specs,
    noise_stds=NOISE_SIGMAS[1:], batch_size=min(len(idx), 250), sanity=False, progress=False,
  )  # fmt: skip
  idx_w = common.subset(len(test_y), args.num_worst, seed=1)  # contains idx when larger
  specs = common.attack_specs(
    {n: (e,) for n, e in WORST_EPS.items()}, WORST_EPS, steps=steps, restarts=2
  )
  worst = jaxjac.evaluate(
    fn, params, test_x[idx_w], test_y[idx_w], key=jax.random.fold_in(key, 2), attacks=specs,
    noise_stds=(), batch_size=min(len(idx_w), 250), progress=False,
  )  # fmt: skip
  curve_sanity = attacks.sanity_report(curves["attacks"], curves["worst_case"], {})
  out = {
    "model": name,
    "num_test": int(len(idx)),
    "num_worst": int(len(idx_w)),
    "train_seconds": seconds,
    "clean_accuracy_full_test": common.accuracy(fn, params, test_x, test_y),
    "num_test_full": int(len(test_y)),
    "noise": [(0.0, curves["clean_accuracy"])]
    + list(zip(curves["noise"]["std"], curves["noise"]["accuracy"], strict=True)),
    "fgsm_linf": common.curve(curves, "fgsm-linf"),
    "pgd_linf": common.curve(curves, "pgd-linf"),
    "pgd_l2": common.curve(curves, "pgd-l2"),
    "worst": {n: common.worst_summary(worst, n, e) for n, e in WORST_EPS.items()},
    "sanity": {
      "passed": bool(curve_sanity["passed"] and worst["sanity"]["passed"]),
      "warnings": curve_sanity["warnings"] + worst["sanity"]["warnings"],
      "curves": curve_sanity,
      "worst_case": worst["sanity"],
    },
    "reports": {"curves": curves, "worst": worst},
  }
  out["eval_seconds"] = time.perf_counter() - t0
  common.write_json(cache, out)
  return out


def robustness(args) -> dict:
  """Figure 3: robustness curves and worst-case robust accuracy of the seven models."""
  hconf = common.load_config_module("hoffman")
  dataset = common.load_data()
  key = jax.random.key(2019)
  models = {}
  for name in args.models or hconf.MODELS:
    models[name] = _robust_model(args, name, dataset, key)
    w = models[name]["worst"]
    print(
      f"{name:8s} clean {models[name]['clean_accuracy_full_test']:.4f}  worst linf "
      f"{w['linf']['worst']:.3f}  l2 {w['l2']['worst']:.3f}  "
      f"({models[name]['eval_seconds']:.0f} s)",
      flush=True,
    )
  record = {
    "experiment": "hoffman_robustness",
    "tiny": args.tiny,
    "environment": common.environment(),
    "num_test": args.num_test,
    "num_worst": args.num_worst,
    "curve_attack": {
      "pgd_steps": 3 if args.tiny else CURVE_STEPS,
      "restarts": 1,
      "step_size": "2.5 eps / steps",
      "loss": "ce",
    },
    "worst_attacks": "PGD-CE (1 start), PGD-CE (2 restarts), APGD-CE, APGD-DLR; "
    f"{3 if args.tiny else CURVE_STEPS} steps each",
    "worst_eps": WORST_EPS,
    "models": models,
  }
  json_path, fig_path = _paths(args, "robustness")
  common.write_json(json_path, record)

  plt = common.setup_matplotlib()
  panels = (
    ("noise", "white-noise std"),
    ("fgsm_linf", "FGSM l_inf eps"),
    ("pgd_linf", "PGD l_inf eps"),
    ("pgd_l2", "PGD l_2 eps"),
  )
  fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
  for ax, (key_, xlabel) in zip(axes, panels, strict=True):
    for name, m in models.items():
      xs, ys = zip(*m[key_], strict=True)
      ax.plot(xs, ys, marker="o", ms=3, label=LABELS[name])
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
  axes[0].set_ylabel(f"accuracy ({args.num_test} test images)")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
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
  dataset = common.load_data()
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
        aa, bb = np.meshgrid(np.asarray(ts), np.asarray(ts), indexing="xy")
        other = cls != center
        dist = float(np.sqrt(aa**2 + bb**2)[other].min()) if other.any() else float("inf")
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
  record = {
    "experiment": "hoffman_decision_cells",
    "tiny": args.tiny,
    "environment": common.environment(),
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

  plt = common.setup_matplotlib()
  names = list(models)
  shown = min(2, len(points))
  fig, axes = plt.subplots(
    2 * shown, len(names), figsize=(2.6 * len(names), 2.6 * 2 * shown), squeeze=False
  )
  for pi in range(shown):
    for r, plane in enumerate(("random", "adversarial")):
      for c, name in enumerate(names):
        ax = axes[2 * pi + r, c]
        ax.imshow(
          cells[f"{pi}/{name}/{plane}"],
          origin="lower",
          cmap="tab10",
          vmin=0,
          vmax=9,
          extent=(-radius, radius, -radius, radius),
          interpolation="nearest",
        )
        ax.plot(0, 0, "k+", ms=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if pi == 0 and r == 0:
          ax.set_title(LABELS[name], fontsize=9)
        if c == 0:
          ax.set_ylabel(f"point {pi}, {plane}", fontsize=8)
  fig.suptitle(f"Decision cells, l_2 radius {radius:g} (colour = predicted class)", fontsize=9)
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
  return record


# ----------------------------------------------------------------------------- main


SUBCOMMANDS = {
  "table1": table1,
  "estimators": estimators,
  "robustness": robustness,
  "decision_cells": decision_cells,
}


def parse(argv):
  p = common.parser(__doc__, SUBCOMMANDS)
  p.add_argument(
    "--jac_test", type=int, default=1000, help="test images for the mean ||J||_F (0: all)"
  )
  p.add_argument("--num_test", type=int, default=500, help="test images for the robustness curves")
  p.add_argument(
    "--num_worst", type=int, default=1000, help="test images for the worst case (0: all 10000)"
  )
  p.add_argument("--seeds", type=int, default=3, help="seeds for Figure 2")
  p.add_argument("--cell_points", type=int, default=20, help="test points for Figure 1")
  p.add_argument("--models", nargs="*", default=None, help="models (robustness, decision_cells)")
  args = p.parse_args(argv)
  if args.tiny:
    args.jac_test = min(args.jac_test, 64)
    args.num_test = min(args.num_test, 64)
    args.num_worst = min(args.num_worst or 64, 64)
    args.seeds = min(args.seeds, 2)
    args.cell_points = min(args.cell_points, 2)
  return common.resolve_dirs(args)


def main(argv=None) -> dict:
  return common.run(SUBCOMMANDS, parse(argv))


if __name__ == "__main__":
  main()
