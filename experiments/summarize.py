"""Prints the Markdown tables of ``experiments/RESULTS.md`` from the results JSON.

Run::

  python experiments/summarize.py [--results experiments/results]
"""

from __future__ import annotations

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {
  "none": "No regularization",
  "l2": "L2 (5e-4)",
  "dropout": "Dropout 0.5",
  "jr": "JR (0.01, n_proj=1)",
  "all": "All combined",
  "at": "FGSM-RS AT (eps 0.1)",
  "jr_at": "JR + AT",
}


def _load(results: str, name: str) -> dict | None:
  path = os.path.join(results, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def table1(rec: dict) -> str:
  lines = [
    "| model | paper acc. | ours acc. | paper mean ‖J‖_F | ours mean ‖J‖_F | train time |",
    "|---|---|---|---|---|---|",
  ]
  for name, r in rec["rows"].items():
    lines.append(
      f"| {NAMES[name]} | {r['paper_test_accuracy']:.1f}% | {100 * r['test_accuracy']:.2f}% | "
      f"{r['paper_jacobian_fro']:.1f} | {r['jacobian_fro']:.2f} | "
      f"{r['train_seconds'] / 60:.1f} min |"
    )
  return "\n".join(lines)


def estimators(rec: dict) -> str:
  lines = [
    "| regularizer | test acc. (mean +- std) | test ‖J‖_F (mean +- std) | train time / run |",
    "|---|---|---|---|",
  ]
  for name, s in rec["summary"].items():
    lines.append(
      f"| {name} | {100 * s['test_accuracy_mean']:.2f} +- {100 * s['test_accuracy_std']:.2f}% | "
      f"{s['jacobian_fro_mean']:.3f} +- {s['jacobian_fro_std']:.3f} | "
      f"{s['train_seconds_mean']:.0f} s |"
    )
  return "\n".join(lines)


def robustness(rec: dict) -> str:
  n = next(iter(rec["models"].values()))["num_worst"]
  lines = [
    f"Worst case on {n} test images (robust accuracy, %); clean on all test images.",
    "",
    "| model | clean | linf 0.1: PGD / PGD-2R / APGD-CE / APGD-DLR / **worst** | "
    "l2 1.0: PGD / PGD-2R / APGD-CE / APGD-DLR / **worst** | sanity |",
    "|---|---|---|---|---|",
  ]
  for name, m in rec["models"].items():
    cells = []
    for norm in ("linf", "l2"):
      w = m["worst"][norm]
      cells.append(
        f"{100 * w['pgd_1']:.1f} / {100 * w['pgd']:.1f} / {100 * w['apgd_ce']:.1f} / "
        f"{100 * w['apgd_dlr']:.1f} / **{100 * w['worst']:.1f}**"
      )
    s = m["sanity"]
    flags = "ok" if s["passed"] else "; ".join(s["warnings"])
    lines.append(
      f"| {NAMES[name]} | {100 * m['clean_accuracy_full_test']:.2f}% | {cells[0]} | {cells[1]} | "
      f"{flags} |"
    )
  lines.append("")
  lines.append(f"Curves on {rec['num_test']} test images (accuracy, %; PGD: 10 steps, 1 start):")
  lines.append("")
  for key in ("noise", "fgsm_linf", "pgd_linf", "pgd_l2"):
    first = next(iter(rec["models"].values()))
    xs = [x for x, _ in first[key]]
    lines.append(f"| {key} | " + " | ".join(f"{x:g}" for x in xs) + " |")
    lines.append("|---" * (len(xs) + 1) + "|")
    for name, m in rec["models"].items():
      lines.append(f"| {NAMES[name]} | " + " | ".join(f"{100 * v:.1f}" for _, v in m[key]) + " |")
    lines.append("")
  return "\n".join(lines)


def _dist(d) -> str:
  return "> 10 (none in grid)" if isinstance(d, str) or d == float("inf") else f"{d:.2f}"


def decision_cells(rec: dict) -> str:
  n = len(rec["test_indices"])
  lines = [
    f"Over {n} test points: median l_2 distance to the nearest grid point of another class "
    "(> 10: none in the grid) and the share of points with no other class in the grid.",
    "",
    "| model | random plane: median distance | no other class | "
    "adversarial plane: median distance | no other class |",
    "|---|---|---|---|---|",
  ]
  for name, planes in rec["statistics"].items():
    cells = []
    for plane in ("random", "adversarial"):
      st = planes[plane]
      cells += [
        _dist(st["median_distance_to_other_class"]),
        f"{100 * st['fraction_no_other_class_in_grid']:.0f}%",
      ]
    lines.append(f"| {NAMES[name]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def surrogate(rec: dict) -> str:
  lines = [
    "| norm (eps) | step | clean CE | first-order robust | JR surrogate | PGD adversarial | "
    "PGD acc. |",
    "|---|---|---|---|---|---|---|",
  ]
  for norm, run in rec["runs"].items():
    log = run["log"]
    for r in (log[0], log[len(log) // 2], log[-1]):
      lines.append(
        f"| {norm} ({run['eps']:g}) | {r['step']} | {r['train_ce']:.3f} | "
        f"{r['train_first_order']:.3f} | {r['train_surrogate']:.3f} | "
        f"{r['train_pgd_adversarial']:.3f} | {100 * r['train_pgd_accuracy']:.1f}% |"
      )
  return "\n".join(lines)


def sweep(rec: dict) -> str:
  lines = [
    "| regularizer | lambda | train acc. | test acc. | std gap | robust train / test "
    "(l2 1.0) | gap | robust train / test (linf 0.1) | gap | test ‖J‖_F | test ‖J‖_{1,1} |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for reg, rows in rec["sweeps"].items():
    for r in rows:
      lines.append(
        f"| {reg} | {r['lambda']:g} | {100 * r['train_accuracy']:.1f} | "
        f"{100 * r['test_accuracy']:.1f} | {100 * r['std_gap']:.1f} | "
        f"{100 * r['robust_train_l2']:.1f} / {100 * r['robust_test_l2']:.1f} | "
        f"{100 * r['robust_gap_l2']:.1f} | {100 * r['robust_train_linf']:.1f} / "
        f"{100 * r['robust_test_linf']:.1f} | {100 * r['robust_gap_linf']:.1f} | "
        f"{r['jacobian_fro_test']:.2f} | {r['jacobian_l11_test']:.1f} |"
      )
  lines.append("")
  for reg, c in rec["correlations"].items():
    lines.append(
      f"- {reg}: Spearman(norm, standard gap) = {c['spearman_norm_vs_std_gap']:.2f}, "
      f"Spearman(norm, robust gap {c['robust_gap_norm']}) = "
      f"{c['spearman_norm_vs_robust_gap']:.2f}"
    )
  return "\n".join(lines)


SECTIONS = (
  ("hoffman_table1", table1),
  ("hoffman_estimators", estimators),
  ("hoffman_robustness", robustness),
  ("hoffman_decision_cells", decision_cells),
  ("wu_li_surrogate_vs_adversarial", surrogate),
  ("wu_li_lambda_sweep", sweep),
)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--results", default=os.path.join(HERE, "results"))
  args = p.parse_args(argv)
  for name, fn in SECTIONS:
    rec = _load(args.results, name)
    print(f"### {name}\n")
    print(fn(rec) if rec else "(not run)")
    print()


if __name__ == "__main__":
  main()
