"""Every figure of the experiments, drawn from the records the scripts write.

Not a public module. Each function takes a record (or its parts) and a PNG path;
nothing here computes a number that is not already in the record.
"""

from __future__ import annotations

import numpy as np

LABELS = {
  "none": "No reg.",
  "l2": "L2",
  "dropout": "Dropout",
  "jr": "JR",
  "all": "All",
  "at": "FGSM-RS AT",
  "jr_at": "JR + AT",
  "base": "Base (L2 + dropout)",
  "base_jr": "Base + JR",
  "base_at": "Base + FGSM-RS AT",
  "base_jr_at": "Base + JR + AT",
}


def _pyplot():
  """Headless matplotlib's pyplot."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  return plt


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)


def _mean_band(ax, steps, values, label: str) -> None:
  """Mean over rows of `values` with a +-1 std band."""
  values = np.asarray(values, dtype=float)
  mean, std = values.mean(0), values.std(0)
  ax.plot(steps, mean, marker="o", ms=3, label=label)
  ax.fill_between(steps, mean - std, mean + std, alpha=0.25)


def table1(rows: dict, path: str) -> None:
  """Held-out ``||J||_F`` over training of the Table-1 models."""
  fig, ax = _pyplot().subplots(figsize=(5, 3.5))
  for name, row in rows.items():
    steps, vals = zip(*row["heldout_jacobian_fro_curve"], strict=True)
    ax.plot(steps, vals, marker="o", label=LABELS.get(name, name))
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("mean ||J||_F (held-out test images)")
  ax.set_title("Table-1 models: Jacobian norm over training")
  ax.legend(fontsize=8)
  _save(fig, path)


def estimators(runs: dict, seeds: int, path: str) -> None:
  """Figure 2: test accuracy and held-out ``||J||_F`` over training, mean +- std over seeds."""
  fig, axes = _pyplot().subplots(1, 2, figsize=(9, 3.5))
  for name, rs in runs.items():
    for ax, key in zip(axes, ("test_accuracy", "heldout_jacobian_fro"), strict=True):
      if rs[0][key]:
        steps = np.array([s for s, _ in rs[0][key]])
        _mean_band(ax, steps, [[v for _, v in r[key]] for r in rs], name)
  axes[0].set_ylabel("test accuracy")
  axes[1].set_ylabel("mean ||J||_F (held-out)")
  axes[1].set_yscale("log")
  for ax in axes:
    ax.set_xlabel("training step")
    ax.legend(fontsize=8)
  fig.suptitle(f"Exact vs random-projection JR (MLP, mean +- std over {seeds} seeds)", fontsize=10)
  _save(fig, path)


def robustness(models: dict, num_test: int, path: str) -> None:
  """Figure 3: accuracy against noise std, FGSM eps and PGD eps (l_inf, l_2)."""
  panels = (
    ("noise", "white-noise std"),
    ("fgsm_linf", "FGSM l_inf eps"),
    ("pgd_linf", "PGD l_inf eps"),
    ("pgd_l2", "PGD l_2 eps"),
  )
  fig, axes = _pyplot().subplots(1, 4, figsize=(15, 3.6))
  for ax, (key, xlabel) in zip(axes, panels, strict=True):
    for name, m in models.items():
      xs, ys = zip(*m[key], strict=True)
      ax.plot(xs, ys, marker="o", ms=3, label=LABELS.get(name, name))
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
  axes[0].set_ylabel(f"accuracy ({num_test} test images)")
  axes[0].legend(fontsize=7)
  _save(fig, path)


def figure3(summary: dict, num_test: int, path: str) -> None:
  """Figure 3 on the L2 + dropout base: accuracy against white-noise std and APGD-CE +
  APGD-T radii (l_inf, l_2), mean over seeds with standard-error bars."""
  panels = (
    ("noise", "white-noise std"),
    ("apgd_linf", "APGD-CE + APGD-T, l_inf eps"),
    ("apgd_l2", "APGD-CE + APGD-T, l_2 eps"),
  )
  fig, axes = _pyplot().subplots(1, 3, figsize=(13, 3.8))
  for ax, (key, xlabel) in zip(axes, panels, strict=True):
    for name, m in summary.items():
      xs, ys, se = zip(*m[key], strict=True)
      label = f"{LABELS.get(name, name)} ({m['num_seeds']} seeds)"
      ax.errorbar(xs, ys, yerr=se, marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
  axes[0].set_ylabel(f"accuracy ({num_test} test images)")
  axes[0].legend(fontsize=7)
  _save(fig, path)


def decision_cells(cells: dict, names: list, shown: int, radius: float, path: str) -> None:
  """Figure 1: predicted classes on random and adversarial planes through test points."""
  fig, axes = _pyplot().subplots(
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
          ax.set_title(LABELS.get(name, name), fontsize=9)
        if c == 0:
          ax.set_ylabel(f"point {pi}, {plane}", fontsize=8)
  fig.suptitle(f"Decision cells, l_2 radius {radius:g} (colour = predicted class)", fontsize=9)
  _save(fig, path)


def amortized(summary: dict, path: str) -> None:
  """Amortized JR: test accuracy and ``||J||_F`` per option (``summary[name][key]
  ["values"]`` over seeds), each seed a dot, with mean +- std."""
  fig, axes = _pyplot().subplots(1, 2, figsize=(9, 3.3))
  names = list(summary)
  for ax, key, label in zip(
    axes, ("test_accuracy", "jacobian_fro"), ("test accuracy", "mean ||J||_F"), strict=True
  ):
    for i, name in enumerate(names):
      vals = summary[name][key]["values"]
      ax.plot([i] * len(vals), vals, "o", color=f"C{i % 10}")
      ax.errorbar(i + 0.15, np.mean(vals), yerr=np.std(vals), fmt="k_", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_ylabel(label)
  fig.suptitle("Amortized JR vs full JR (each seed a dot; mean +- std)", fontsize=10)
  _save(fig, path)


def wu_li_surrogate(runs: dict, path: str) -> None:
  """Wu and Li's Figure 1: surrogate, first-order and PGD losses over training."""
  fig, axes = _pyplot().subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
  curves = (
    ("surrogate", "C0", "JR surrogate"),
    ("first_order", "C2", "first-order robust"),
    ("pgd_adversarial", "C3", "PGD adversarial"),
    ("ce", "C7", "clean CE"),
  )
  for ax, (norm, run) in zip(axes[0], runs.items(), strict=True):
    steps = [r["step"] for r in run["log"]]
    for split, ls in (("train", "-"), ("test", "--")):
      for key, color, label in curves:
        ax.plot(
          steps, [r[f"{split}_{key}"] for r in run["log"]], color + ls, label=f"{label} ({split})"
        )
    name = "l_2, ||J||_F" if norm == "l2" else "l_inf, ||J||_{1,1}"
    ax.set_title(f"{name}, eps = {run['eps']:g}", fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
  axes[0, 0].legend(fontsize=7)
  _save(fig, path)


def wu_li_sweep(sweeps: dict, norm_of_reg: dict, path: str) -> None:
  """The lambda sweep: accuracies, gaps, and gaps against the Jacobian norm."""
  fig, axes = _pyplot().subplots(len(sweeps), 3, figsize=(13, 3.5 * len(sweeps)), squeeze=False)
  for row, (reg, rows) in enumerate(sweeps.items()):
    norm = norm_of_reg[reg]
    xs = np.arange(len(rows))
    ax = axes[row, 0]
    ax.plot(xs, [r["train_accuracy"] for r in rows], "C0-o", label="train")
    ax.plot(xs, [r["test_accuracy"] for r in rows], "C0--o", label="test")
    ax.plot(xs, [r[f"robust_train_{norm}"] for r in rows], "C3-s", label=f"robust train ({norm})")
    ax.plot(xs, [r[f"robust_test_{norm}"] for r in rows], "C3--s", label=f"robust test ({norm})")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax = axes[row, 1]
    ax.plot(xs, [r["std_gap"] for r in rows], "C0-o", label="standard gap")
    ax.plot(xs, [r[f"robust_gap_{norm}"] for r in rows], "C3-s", label=f"robust gap ({norm})")
    ax.set_ylabel("train - test accuracy")
    ax.legend(fontsize=7)
    for ax in axes[row, :2]:
      ax.set_xticks(xs, [f"{r['lambda']:g}" for r in rows])
      ax.set_xlabel(f"lambda ({reg})")
    ax = axes[row, 2]
    jn = [r["jacobian_fro_test" if reg == "frobenius" else "jacobian_l11_test"] for r in rows]
    ax.plot(jn, [r["std_gap"] for r in rows], "C0o", label="standard gap")
    ax.plot(jn, [r[f"robust_gap_{norm}"] for r in rows], "C3s", label=f"robust gap ({norm})")
    ax.set_xlabel("test " + ("||J||_F" if reg == "frobenius" else "||J||_{1,1}"))
    ax.set_xscale("log")
    ax.set_ylabel("gap")
    ax.legend(fontsize=7)
  _save(fig, path)
