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
  "base": "Base (L2 + dropout)",
  "base_jr": "Base + JR",
  "base_at": "Base + FGSM-RS AT",
  "base_jr_at": "Base + JR + AT",
}


def _load(results: str, name: str) -> dict | None:
  path = os.path.join(results, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  """A Markdown table."""
  return [
    "| " + " | ".join(header) + " |",
    "|" + "---|" * len(header),
    *("| " + " | ".join(r) + " |" for r in rows),
  ]


def _pct(p: float, se: float | None = None) -> str:
  return f"{100 * p:.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")


def _ms(s: dict, scale: float = 1.0, digits: int = 2) -> str:
  """``mean ± std`` of a seed spread."""
  return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def _where(rec: dict) -> str:
  env, data = rec["environment"], rec.get("data", {})
  return (
    f"_{env['backend']} ({env['cpu_count']} CPUs), jax {env['jax']}; data: "
    f"{data.get('source', '?')} {data.get('location', '')}_"
  )


def table1(rec: dict) -> str:
  rows = [
    [
      NAMES[name],
      f"{r['paper_test_accuracy']:.1f}%",
      f"{100 * r['test_accuracy']:.2f}%",
      f"{r['paper_jacobian_fro']:.1f}",
      f"{r['jacobian_fro']:.2f}",
      f"{r['train_seconds'] / 60:.1f} min",
    ]
    for name, r in rec["rows"].items()
  ]
  header = ["model", "paper acc.", "ours acc.", "paper mean ‖J‖_F", "ours mean ‖J‖_F", "train"]
  return "\n".join([*_table(header, rows), "", _where(rec)])


def table1_long(rec: dict) -> str:
  """Table 1 at the longer budget, and the held-out ``||J||_F`` per half epoch."""
  out = [table1(rec), ""]
  ratio = rec.get("jr_norm_reduction_vs_none")
  if ratio is not None:
    out.append(f"JR norm reduction against no regularization: {ratio:.1f}x (goal: 10x)")
    out.append("")
  curves = {name: r["heldout_jacobian_fro_curve"] for name, r in rec["rows"].items()}
  steps = sorted({s for c in curves.values() for s, _ in c})
  header = ["step", *(NAMES[n] for n in curves)]
  rows = [
    [str(step), *(f"{dict(c).get(step, float('nan')):.2f}" for c in curves.values())]
    for step in steps
  ]
  out += _table(header, rows)
  return "\n".join(out)


def _curve_cells(points: list, digits: int = 1) -> list[str]:
  """``mean ± se`` in percent for each ``(x, mean, se)``."""
  return [f"{100 * m:.{digits}f} ± {100 * se:.{digits}f}" for _, m, se in points]


def figure3(rec: dict) -> str:
  """Figure 3 on the L2 + dropout base: curves as mean ± standard error over seeds."""
  out = []
  for key, title in (
    ("noise", "white-noise std"),
    ("apgd_linf", "APGD-CE + APGD-T l_inf eps"),
    ("apgd_l2", "APGD-CE + APGD-T l_2 eps"),
  ):
    first = next(iter(rec["summary"].values()))[key]
    header = [f"{title} (seeds)", *(f"{x:g}" for x, _, _ in first)]
    rows = [
      [f"{NAMES[name]} ({m['num_seeds']})", *_curve_cells(m[key])]
      for name, m in rec["summary"].items()
    ]
    out += [*_table(header, rows), ""]
  clean = [
    f"{NAMES[n]} {100 * m['clean_accuracy_full_test'][1]:.2f} ± "
    f"{100 * m['clean_accuracy_full_test'][2]:.2f}%"
    for n, m in rec["summary"].items()
  ]
  out.append("Clean accuracy (all 10000 test images): " + "; ".join(clean))
  confirms = []
  for name, runs in rec["runs"].items():
    for r in runs:
      for norm in ("linf", "l2"):
        c = r.get(f"confirm_{norm}")
        if c:
          confirms.append(
            f"{NAMES[name]} seed {r['seed']} {norm} {c['eps']:g}: {c['num_attacked']} robust of "
            f"{c['num_images']}, FAB-T/Square broke {len(c['broken_by_fab_or_square'])}"
          )
  if confirms:
    out += ["", "Rest of the standard suite after APGD-CE + APGD-T:", *(f"- {c}" for c in confirms)]
  return "\n".join([*out, "", _where(rec)])


def _estimator_spreads(s: dict) -> dict:
  """A summary of ``estimators``; records written before the seed spreads had
  ``<key>_mean`` / ``<key>_std`` fields instead."""
  if "final_test_accuracy" in s:
    return s
  pair = lambda key: {"mean": s[f"{key}_mean"], "std": s.get(f"{key}_std", 0.0)}
  return {
    "final_test_accuracy": pair("test_accuracy"),
    "final_jacobian_fro": pair("jacobian_fro"),
    "train_seconds": pair("train_seconds"),
  }


def estimators(rec: dict) -> str:
  summary = {name: _estimator_spreads(s) for name, s in rec["summary"].items()}
  rows = [
    [
      name,
      _ms(s["final_test_accuracy"], 100) + "%",
      _ms(s["final_jacobian_fro"], 1, 3),
      f"{s['train_seconds']['mean']:.0f} s",
    ]
    for name, s in summary.items()
  ]
  header = ["regularizer", "test acc. (mean ± std)", "test ‖J‖_F (mean ± std)", "train / run"]
  return "\n".join(_table(header, rows))


def _worst_cells(w: dict) -> list[str]:
  """Robust accuracy after each attack of the cascade, and the worst case ± its SE."""
  after = " / ".join(_pct(w["after"][a]) for a in w["attacks"])
  return [after, f"**{_pct(w['worst'], w['worst_se'])}**"]


def worst_case(rec: dict) -> str:
  rows = []
  for name, m in rec["models"].items():
    done = m.get("num_done", rec["num_worst"])
    images = f"{done}" + ("" if done == rec["num_worst"] else f" of {rec['num_worst']}")
    cells = [NAMES.get(name, name), images, _pct(m["worst"]["linf"]["clean"])]
    for norm in ("linf", "l2"):
      cells += _worst_cells(m["worst"][norm])
    s = m["sanity"]
    cells.append("passed" if s["passed"] else "; ".join(s["warnings"]))
    rows.append(cells)
  header = [
    "model",
    "images",
    "clean",
    "l_inf 0.1: after APGD-CE / APGD-T / FAB-T / Square",
    "**worst ± SE**",
    "l_2 1.0: after APGD-CE / APGD-T / FAB-T / Square",
    "**worst ± SE**",
    "sanity",
  ]
  head = (
    f"Robust accuracy (%) on a random subset of {rec['num_worst']} test images evaluated in "
    f"a random order (`images`: those done so far, the first in that order, a uniform "
    f"sample), standard suite, "
    f"{rec['steps']} iterations, Square {rec['queries']} queries."
  )
  return "\n".join([head, "", *_table(header, rows), "", _where(rec)])


def _within(within: dict) -> str:
  """``yes``, or ``no: `` and the metrics outside full JR's mean +- 2 std."""
  outside = [k for k, v in within.items() if not v]
  return "no: " + ", ".join(outside) if outside else "yes"


def amortized(rec: dict) -> str:
  rows = []
  for name, s in rec["summary"].items():
    within = s["within_2std_of_full_jr"]
    rows.append(
      [
        name,
        str(len(s["test_accuracy"]["values"])),
        _ms(s["test_accuracy"], 100) + "%",
        _ms(s["jacobian_fro"], 1, 3),
        *(
          [_ms(s["apgd_linf"], 100) + "%", _ms(s["apgd_l2"], 100) + "%"] if "apgd_linf" in s else []
        ),
        f"{s['train_seconds']['mean'] / 60:.1f} min",
        _within(within),
      ]
    )
  apgd = all("apgd_linf" in s for s in rec["summary"].values())
  rows = [r if apgd or len(r) == 6 else r[:4] + r[6:] for r in rows]
  header = [
    "JR option",
    "seeds",
    "test acc. (mean ± std)",
    "test ‖J‖_F (mean ± std)",
    *(["APGD-CE l_inf 0.1", "APGD-CE l_2 1.0"] if apgd else []),
    "train / run",
    "within 2 std of full JR (all metrics)",
  ]
  return "\n".join([*_table(header, rows), "", _where(rec)])


def robustness(rec: dict) -> str:
  lines = [
    f"Curves on {rec['num_test']} test images (accuracy, %; each attack on every example; "
    f"PGD {rec['curve_attack']['pgd_steps']} steps, 1 start):",
    "",
  ]
  first = next(iter(rec["models"].values()))
  for key in ("noise", "fgsm_linf", "pgd_linf", "pgd_l2"):
    header = [key] + [f"{x:g}" for x, _ in first[key]]
    rows = [[NAMES[n]] + [_pct(v) for _, v in m[key]] for n, m in rec["models"].items()]
    lines += [*_table(header, rows), ""]
  return "\n".join(lines)


def _dist(d) -> str:
  return "> 10 (none in grid)" if isinstance(d, str) or d == float("inf") else f"{d:.2f}"


def decision_cells(rec: dict) -> str:
  rows = []
  for name, planes in rec["statistics"].items():
    cells = [NAMES[name]]
    for plane in ("random", "adversarial"):
      st = planes[plane]
      cells += [
        _dist(st["median_distance_to_other_class"]),
        f"{100 * st['fraction_no_other_class_in_grid']:.0f}%",
      ]
    rows.append(cells)
  header = [
    "model",
    "random plane: median distance",
    "no other class",
    "adversarial plane: median distance",
    "no other class",
  ]
  head = (
    f"Over {len(rec['test_indices'])} test points: median l_2 distance to the nearest grid "
    "point of another class (> 10: none in the grid) and the share of points with no other "
    "class in the grid."
  )
  return "\n".join([head, "", *_table(header, rows)])


def surrogate(rec: dict) -> str:
  rows = []
  for norm, run in rec["runs"].items():
    log = run["log"]
    for r in (log[0], log[len(log) // 2], log[-1]):
      rows.append(
        [
          f"{norm} ({run['eps']:g})",
          str(r["step"]),
          f"{r['train_ce']:.3f}",
          f"{r['train_first_order']:.3f}",
          f"{r['train_surrogate']:.3f}",
          f"{r['train_pgd_adversarial']:.3f}",
          _pct(r["train_pgd_accuracy"]) + "%",
        ]
      )
  header = [
    "norm (eps)",
    "step",
    "clean CE",
    "first-order robust",
    "JR surrogate",
    "PGD adversarial",
    "PGD acc.",
  ]
  return "\n".join(_table(header, rows))


def sweep(rec: dict) -> str:
  rows = []
  for reg, rs in rec["sweeps"].items():
    for r in rs:
      cells = [reg, f"{r['lambda']:g}", _pct(r["train_accuracy"]), _pct(r["test_accuracy"])]
      cells.append(_pct(r["std_gap"]))
      for norm in ("l2", "linf"):
        tr, te = r[f"robust_train_{norm}"], r[f"robust_test_{norm}"]
        se, se_tr = r.get(f"robust_test_{norm}_se"), r.get(f"robust_train_{norm}_se")
        # Train and test images are disjoint: the gap's standard error adds in quadrature.
        se_gap = None if se is None or se_tr is None else (se**2 + se_tr**2) ** 0.5
        cells += [f"{_pct(tr)} / {_pct(te, se)}", _pct(r[f"robust_gap_{norm}"], se_gap)]
      cells += [f"{r['jacobian_fro_test']:.2f}", f"{r['jacobian_l11_test']:.1f}"]
      rows.append(cells)
  header = [
    "regularizer",
    "lambda",
    "train acc.",
    "test acc.",
    "std gap",
    "robust train / test (l2 1.0)",
    "gap",
    "robust train / test (linf 0.1)",
    "gap",
    "test ‖J‖_F",
    "test ‖J‖_{1,1}",
  ]
  lines = [*_table(header, rows), ""]
  for reg, c in rec["correlations"].items():
    lines.append(
      f"- {reg}: Spearman(norm, standard gap) = {c['spearman_norm_vs_std_gap']:.2f}, "
      f"Spearman(norm, robust gap {c['robust_gap_norm']}) = "
      f"{c['spearman_norm_vs_robust_gap']:.2f}"
    )
  return "\n".join(lines)


SECTIONS = (
  ("hoffman_table1", table1),
  ("hoffman_table1_long", table1_long),
  ("hoffman_figure3", figure3),
  ("hoffman_estimators", estimators),
  ("hoffman_worst_case", worst_case),
  ("hoffman_amortized", amortized),
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
    try:
      print(fn(rec) if rec else "(not run)")
    except KeyError as err:  # written by an earlier version of the scripts
      print(f"(a record in an earlier format, without {err}: regenerate it)")
    print()


if __name__ == "__main__":
  main()
