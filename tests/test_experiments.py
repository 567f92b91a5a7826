"""End-to-end runs of the experiment scripts' tiny variants, checking the JSON they write.

Each subcommand of ``experiments/hoffman.py`` and ``experiments/wu_li.py`` runs in
``--tiny`` mode (small MLPs, a few steps, a few examples) into temporary
directories; the checks are on relations the numbers must satisfy whatever the
training did (worst case <= every attack, eps = 0 equals clean accuracy, the
surrogate bounds the first-order robust loss, gaps are differences of the
accuracies reported, ...) and on fixed-key outcomes. The three heaviest (five
or more tiny trainings each) are marked slow: ``pytest -m slow tests/test_experiments.py``.
"""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
from conftest import REPO_ROOT

EXPERIMENTS = os.path.join(REPO_ROOT, "experiments")


def _load(name):
  spec = importlib.util.spec_from_file_location(
    f"_exp_{name}", os.path.join(EXPERIMENTS, f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("experiments")
  return ["--tiny", "--out", str(root / "results"), "--workdir", str(root / "runs")]


def _read(args, name):
  with open(os.path.join(args[2], f"{name}.json")) as f:
    return json.load(f)


@pytest.mark.slow  # several tiny trainings and ~10 attack compilations
def test_hoffman_table1(dirs):
  record = _load("hoffman").main(["table1", *dirs])
  on_disk = _read(dirs, "hoffman_table1")
  assert on_disk["rows"].keys() == {"none", "l2", "dropout", "jr", "all"}
  assert on_disk["tiny"] is True
  for name, row in on_disk["rows"].items():
    assert 0.2 < row["test_accuracy"] <= 1.0, name  # 10 classes: above chance after training
    assert row["num_test"] == 256  # the tiny variant's test subset
    assert math.isfinite(row["jacobian_fro"]) and row["jacobian_fro"] > 0
    # ||J||_{1,1} >= ||J||_F entry-wise (sum |a| >= sqrt(sum a^2)) per example, hence in mean.
    assert row["jacobian_l11"] >= row["jacobian_fro"]
    assert row["heldout_jacobian_fro_curve"][-1][0] == row["steps"] == 24
  rows = on_disk["rows"]
  ratio = rows["none"]["jacobian_fro"] / rows["jr"]["jacobian_fro"]
  assert on_disk["jr_norm_reduction_vs_none"] == pytest.approx(ratio, rel=1e-6)
  assert record["criteria"]["jr_norm_10x_smaller"] == (ratio >= 10)
  # Same seed and data: the JR and the all-combined runs end with smaller norms than none.
  assert rows["jr"]["jacobian_fro"] < rows["none"]["jacobian_fro"]
  assert rows["all"]["jacobian_fro"] < rows["none"]["jacobian_fro"]
  assert os.path.getsize(os.path.join(dirs[2], "hoffman_table1.png")) > 1000


@pytest.mark.slow  # several tiny trainings and ~10 attack compilations
def test_hoffman_estimators(dirs):
  _load("hoffman").main(["estimators", *dirs, "--seeds", "1"])
  rec = _read(dirs, "hoffman_estimators")
  assert rec["summary"].keys() == {"none", "exact", "proj1", "proj3"}
  for name, runs in rec["runs"].items():
    (run,) = runs
    steps = [s for s, _ in run["heldout_jacobian_fro"]]
    assert steps == sorted(steps) and steps[-1] == 24, name
    # The summary is the mean over the seeds' final values (one seed: equal, std 0).
    assert rec["summary"][name]["jacobian_fro_mean"] == pytest.approx(run["final_jacobian_fro"])
    assert rec["summary"][name]["jacobian_fro_std"] == 0.0
  fro = {k: v["jacobian_fro_mean"] for k, v in rec["summary"].items()}
  for name in ("exact", "proj1", "proj3"):
    assert fro[name] < fro["none"], (name, fro)


@pytest.mark.slow  # several tiny trainings and ~10 attack compilations
def test_hoffman_robustness(dirs):
  rec = _load("hoffman").main(["robustness", *dirs, "--models", "none", "at"])
  on_disk = _read(dirs, "hoffman_robustness")
  assert on_disk["models"].keys() == {"none", "at"}
  assert on_disk["num_test"] == 64 and on_disk["num_worst"] == 64
  for name, m in rec["models"].items():
    clean = m["pgd_linf"][0][1]
    assert m["pgd_linf"][0][0] == 0.0 and m["pgd_l2"][0][1] == clean
    assert m["noise"][0][0] == 0.0 and m["noise"][0][1] == pytest.approx(clean)
    assert m["fgsm_linf"][0][1] == pytest.approx(clean)
    for norm, w in m["worst"].items():
      assert w["worst"] <= min(w["pgd"], w["pgd_1"], w["apgd_ce"], w["apgd_dlr"], w["clean"])
      assert w["pgd"] <= w["pgd_1"], (name, norm)  # restarts contain the single run
      assert w["clean"] == pytest.approx(clean)
      # The full sanity report ran on the worst-case set: more steps, more restarts, large eps.
      assert m["sanity"]["worst_case"]["runs"][norm].keys() == {
        "more_steps", "more_restarts", "large_eps"
      }
    assert m["sanity"]["passed"] == (not m["sanity"]["warnings"])
    # PGD at the largest radius (l_inf 0.5, l_2 6) beats every model.
    assert m["pgd_linf"][-1][1] <= 0.05 and m["pgd_l2"][-1][1] <= 0.05, name
  assert os.path.getsize(os.path.join(dirs[2], "hoffman_robustness.png")) > 1000


@pytest.mark.slow  # two tiny trainings, 61 x 61 grids and PGD compilations
def test_hoffman_decision_cells(dirs):
  rec = _load("hoffman").main(["decision_cells", *dirs, "--models", "none", "jr"])
  assert _read(dirs, "hoffman_decision_cells")["summary"].keys() == {"none", "jr"}
  for planes in rec["summary"].values():
    assert planes.keys() == {"random", "adversarial"}
    for points in planes.values():
      assert len(points) == 2
      for p in points:
        assert 0 < p["fraction_same_class"] <= 1
        assert p["distance_to_other_class"] > 0
    # Both planes pass through the same test point: the same class at the centre.
    for adv, rnd in zip(planes["adversarial"], planes["random"], strict=True):
      assert adv["center_class"] == rnd["center_class"]


@pytest.mark.slow  # two tiny surrogate trainings with PGD logging
def test_wu_li_surrogate_vs_adversarial(dirs):
  rec = _load("wu_li").main(["surrogate_vs_adversarial", *dirs])
  assert rec["runs"].keys() == {"l2", "linf"}
  for norm, run in rec["runs"].items():
    steps = [r["step"] for r in run["log"]]
    assert steps == [0, 8, 16, 24], norm
    for r in run["log"]:
      for split in ("train", "test"):
        # Exact surrogate >= first-order robust loss >= clean loss (Wu and Li's bound).
        assert r[f"{split}_surrogate"] >= r[f"{split}_first_order"] - 1e-5
        assert r[f"{split}_first_order"] >= r[f"{split}_ce"] - 1e-6
        assert r[f"{split}_pgd_adversarial"] > 0
    assert run["surrogate_ge_first_order_all"]
  assert _read(dirs, "wu_li_surrogate_vs_adversarial")["runs"]["l2"]["eps"] == 1.0


def test_wu_li_lambda_sweep(dirs):
  rec = _load("wu_li").main(["lambda_sweep", *dirs, "--max_lambdas", "1"])
  assert rec["sweeps"].keys() == {"frobenius", "l11"}
  for reg, rows in rec["sweeps"].items():
    assert [r["lambda"] for r in rows] == [0.0, {"frobenius": 0.1, "l11": 0.01}[reg]]
    for r in rows:
      assert r["std_gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
      for norm in ("l2", "linf"):
        assert r[f"robust_gap_{norm}"] == pytest.approx(
          r[f"robust_train_{norm}"] - r[f"robust_test_{norm}"]
        )
        assert 0 <= r[f"robust_test_{norm}"] <= 1
      assert r["jacobian_l11_test"] >= r["jacobian_fro_test"] > 0
    # The regularized run ends with a smaller norm of its own kind than lambda = 0.
    key = "jacobian_fro_test" if reg == "frobenius" else "jacobian_l11_test"
    assert rows[1][key] < rows[0][key]
  c = rec["correlations"]["frobenius"]
  assert -1 <= c["spearman_norm_vs_std_gap"] <= 1 or np.isnan(c["spearman_norm_vs_std_gap"])
