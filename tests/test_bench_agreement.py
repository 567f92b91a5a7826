"""The agreement benchmark's bookkeeping: the cascade it runs the reference as, and
its summary (never torch or torchattacks here; the benchmark itself needs both)."""

import os

import numpy as np
import pytest
from conftest import load_script

agr = load_script(os.path.join("benchmarks", "bench_agreement.py"), "_bench_agreement")


def test_cascade_attacks_only_the_still_robust_and_counts_only_points_in_the_ball():
  # A 1-d "model": predicts 1 iff the pixel is > 0.5; every label is 1.
  x = np.array([0.9, 0.6, 0.55, 0.52, 0.3], np.float32).reshape(5, 1, 1, 1)
  y = np.ones(5, np.int64)
  predict = lambda a: (np.asarray(a).reshape(len(a)) > 0.5).astype(np.int64)  # noqa: E731
  seen = {}

  def shift(name, delta):
    def fn(xs, ys):
      seen[name] = xs.reshape(-1).tolist()
      return xs - delta

    return fn

  eps = 0.06
  out = agr.cascade(
    [("small", shift("small", 0.04)), ("outside", shift("outside", 0.2)),
     ("exact", shift("exact", eps + 0.5 * agr.TOL))],
    predict, x, y, "linf", eps,
  )  # fmt: skip
  np.testing.assert_array_equal(out["clean"], [True, True, True, True, False])
  # "small" breaks 0.52 (-> 0.48); "outside" leaves the ball: counted as nothing;
  # "exact" sits within the tolerance and breaks 0.55, not 0.6 or 0.9.
  np.testing.assert_array_equal(out["broken"]["small"], [False, False, False, True, False])
  np.testing.assert_array_equal(out["broken"]["outside"], np.zeros(5, bool))
  np.testing.assert_array_equal(out["broken"]["exact"], [False, False, True, False, False])
  assert seen["small"] == pytest.approx([0.9, 0.6, 0.55, 0.52])  # never the misclassified 0.3
  assert seen["outside"] == pytest.approx([0.9, 0.6, 0.55])  # never the broken 0.52
  assert set(out["seconds"]) == {"small", "outside", "exact"}


def _side(clean, *broken):
  return {
    "clean": list(clean),
    "broken": {n: list(b) for n, b in zip(agr.ATTACKS, broken, strict=False)},
    "seconds": {n: 1.0 for n in agr.ATTACKS[: len(broken)]},
  }


def test_summary_merges_units_and_decides_never_weaker_at_half_a_point():
  which = list(agr.ATTACKS[:2])
  t, f = True, False
  units = [
    {  # 4 images: jaxjac's first attack breaks image 1, the reference's second breaks it
      "jaxjac": _side([t, t, t, f], [f, t, f, f], [f, f, f, f]),
      "reference": _side([t, t, t, f], [f, f, f, f], [f, t, t, f]),
    },
    {  # 2 images, both robust on both sides
      "jaxjac": _side([t, t], [f, f], [f, f]),
      "reference": _side([t, t], [f, f], [f, f]),
    },
  ]
  s = agr.summarize(units, which)
  assert s["num_images"] == 6
  assert s["jaxjac"]["after"] == {"apgd_ce": pytest.approx(4 / 6), "apgd_t": pytest.approx(4 / 6)}
  assert s["reference"]["after"] == {
    "apgd_ce": pytest.approx(5 / 6),
    "apgd_t": pytest.approx(3 / 6),
  }
  assert s["agreement"] == {
    "both_robust": 3, "only_jaxjac_robust": 1, "only_reference_robust": 0, "both_broken": 2
  }  # fmt: skip
  assert s["difference_points"] == pytest.approx(100 / 6) and not s["never_weaker"]
  assert s["jaxjac"]["seconds"] == {"apgd_ce": 2.0, "apgd_t": 2.0}
  # 200 images, jaxjac one image above: 0.5 points, still "never weaker"; two: not.
  for extra, ok in ((1, True), (2, False)):
    a = np.zeros(200, bool)
    a[: 100 + extra] = True
    b = np.zeros(200, bool)
    b[:100] = True
    unit = {
      "jaxjac": _side(np.ones(200, bool), ~a, np.zeros(200, bool)),
      "reference": _side(np.ones(200, bool), ~b, np.zeros(200, bool)),
    }
    assert agr.summarize([unit], which)["never_weaker"] is ok
  table = agr.markdown(
    {"models": {"plain": {"settings": [{"norm": "linf", "eps": 0.1, "num_requested": 10, **s}]}}}
  )
  row = table.splitlines()[-1]
  assert row.startswith("| plain | linf | 0.1 | 6 of 10 | **0.667** (0.667 / 0.667) |")
  assert "| 3 / 1 / 0 / 2 | NO (+16.7) |" in row
