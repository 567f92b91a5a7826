"""`jaxjac.evaluate` against closed forms on a two-class linear model, and its sanity report."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxjac
from jaxjac.robustness import AttackSpec, GradientMaskingWarning, sanity_report

INF_BOX = (-math.inf, math.inf)
LINF_EPS = (0.1, 0.3, 0.5)
L2_EPS = (0.5, 1.0, 2.0)
STDS = (0.5, 1.0)


def linear_apply(p, x):
  return x.reshape(x.shape[0], -1) @ p["w"].T + p["b"][None, :]


def masked_apply(p, x):
  """The linear model behind a zero input gradient: gradient masking by design."""
  return linear_apply(p, jax.lax.stop_gradient(x))


SPECS = (
  AttackSpec("fgsm-linf", "fgsm", "linf", LINF_EPS, steps=1),
  AttackSpec("pgd-margin-linf", "pgd", "linf", LINF_EPS, steps=10, loss="margin"),
  AttackSpec("fgsm-l2", "fgsm", "l2", L2_EPS, steps=1),
  AttackSpec("pgd-ce-l2", "pgd", "l2", L2_EPS, steps=20, loss="ce", relative_step=0.25),
)


def two_class_problem(n=200, d=10):
  """Gaussian inputs, a random 2-class linear model, 10% of the labels flipped."""
  kw, kx = jax.random.split(jax.random.key(0))
  params = {"w": jax.random.normal(kw, (2, d)), "b": jnp.zeros(2)}
  x = np.asarray(jax.random.normal(kx, (n, d)))
  y = np.asarray(jnp.argmax(linear_apply(params, jnp.asarray(x)), axis=1)).astype(np.int32)
  y[: n // 10] = 1 - y[: n // 10]
  z = x @ np.asarray(params["w"]).T
  take = lambda c: np.take_along_axis(z, c[:, None], 1)[:, 0]
  margin = take(y) - take(1 - y)
  w_diff = np.asarray(params["w"][1] - params["w"][0])
  return params, x, y, margin, w_diff


@pytest.fixture(scope="module")
def linear_report():
  params, x, y, margin, w_diff = two_class_problem()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = jaxjac.evaluate(
        linear_apply, params, x, y, key=jax.random.key(1), suite="fast", attacks=SPECS,
        noise_stds=STDS, batch_size=64, bounds=INF_BOX, large_eps={"linf": 10.0, "l2": 100.0},
        progress=False,
    )  # fmt: skip
  return report, caught, (params, x, y, margin, w_diff)


def test_clean_and_attack_accuracy_match_closed_form(linear_report):
  # Two classes, no box: x is robust at radius eps iff its margin
  # z_y - z_other exceeds eps ||w_y - w_other||_q (q = 1 for l_inf, 2 for l2).
  # FGSM attains this exactly; PGD must match it too, and no attack can
  # report less than it (that would break the eps-ball).
  report, _, (_, _, _, margin, w_diff) = linear_report
  assert report["num_examples"] == 200
  assert report["clean_accuracy"] == pytest.approx(np.mean(margin > 0))
  for norm, order, grid in (("linf", 1, LINF_EPS), ("l2", 2, L2_EPS)):
    exact = [float(np.mean(margin > e * np.linalg.norm(w_diff, ord=order))) for e in grid]
    assert 0.0 < exact[-1] < exact[0] < report["clean_accuracy"]
    for name in (f"fgsm-{norm}", f"pgd-margin-{norm}" if norm == "linf" else "pgd-ce-l2"):
      res = report["attacks"][name]
      assert res["eps"] == list(grid)
      np.testing.assert_allclose(res["accuracy"], exact, atol=1e-9, err_msg=name)
    assert report["worst_case"][norm]["eps"] == list(grid)
    np.testing.assert_allclose(report["worst_case"][norm]["accuracy"], exact, atol=1e-9)


@pytest.mark.probabilistic
def test_noise_accuracy_matches_gaussian_closed_form(linear_report):
  # With n ~ N(0, sigma^2 I): P(correct) = Phi(margin / (sigma ||w_y - w_o||_2)).
  # One draw per example; 4 standard deviations of the sum of Bernoullis.
  report, _, (_, _, _, margin, w_diff) = linear_report
  assert report["noise"]["std"] == list(STDS)
  for std, acc in zip(STDS, report["noise"]["accuracy"], strict=True):
    z = margin / (std * np.linalg.norm(w_diff))
    p = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    sigma = math.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(acc - np.mean(p)) < 4 * sigma


def test_report_is_json_and_sanity_passes(linear_report):
  report, caught, _ = linear_report
  assert json.loads(json.dumps(report)) == report
  assert report["sanity"]["passed"] and report["sanity"]["warnings"] == []
  assert not [w for w in caught if issubclass(w.category, GradientMaskingWarning)]
  runs = report["sanity"]["runs"]
  assert runs["linf"]["large_eps"]["accuracy"] == 0.0
  assert runs["l2"]["large_eps"]["accuracy"] == 0.0
  for norm in ("linf", "l2"):
    for check in ("more_steps", "more_restarts"):
      assert runs[norm][check]["accuracy"] <= runs[norm][check]["base_accuracy"]


def test_results_do_not_depend_on_batching(linear_report):
  # Deterministic parts (clean, FGSM) are identical with one unpadded batch.
  report, _, (params, x, y, _, _) = linear_report
  single = jaxjac.evaluate(
      linear_apply, params, x, y, key=jax.random.key(1), suite="fast", attacks=(SPECS[0], SPECS[2]),
      noise_stds=(), batch_size=len(y), bounds=INF_BOX, sanity=False, progress=False,
  )  # fmt: skip
  assert single["clean_accuracy"] == report["clean_accuracy"]
  for name in ("fgsm-linf", "fgsm-l2"):
    assert single["attacks"][name]["accuracy"] == report["attacks"][name]["accuracy"]
  assert single["sanity"] is None


def test_masked_gradients_are_flagged():
  # Zero input gradients: PGD moves only by its random start, so accuracy
  # stays far from 0 even when the ball covers the whole box.
  params, _, _, _, _ = two_class_problem(d=10)
  x = np.asarray(jax.random.uniform(jax.random.key(3), (64, 10)))
  y = np.asarray(jnp.argmax(linear_apply(params, jnp.asarray(x)), axis=1)).astype(np.int32)
  specs = (AttackSpec("pgd-ce-linf", "pgd", "linf", (0.1, 0.2), steps=5),)
  with pytest.warns(GradientMaskingWarning, match="large eps"):
    report = jaxjac.evaluate(
        masked_apply, params, x, y, key=jax.random.key(4), attacks=specs, noise_stds=(),
        batch_size=64, progress=False,
    )  # fmt: skip
  assert not report["sanity"]["passed"]
  assert report["sanity"]["runs"]["linf"]["large_eps"]["eps"] == 1.0  # the whole [0, 1] box
  assert report["sanity"]["runs"]["linf"]["large_eps"]["accuracy"] > 0.2


def test_sanity_report_flags_each_violation():
  good = {"a": {"eps": [0.1, 0.2, 0.3], "accuracy": [0.6, 0.4, 0.1]}}
  worst = {"linf": {"eps": [0.1, 0.2, 0.3], "accuracy": [0.5, 0.4, 0.1]}}
  extra = {
    "linf": {
      "large_eps": {"eps": 1.0, "accuracy": 0.0, "attack": "pgd"},
      "more_steps": {"eps": 0.2, "accuracy": 0.39, "base_accuracy": 0.4, "attack": "pgd"},
      "more_restarts": {"eps": 0.2, "accuracy": 0.4, "base_accuracy": 0.4, "attack": "pgd"},
    }
  }
  assert sanity_report(good, worst, extra)["passed"]
  rising = {"a": {"eps": [0.3, 0.1, 0.2], "accuracy": [0.1, 0.6, 0.65]}}  # unsorted eps
  report = sanity_report(rising, worst, extra)
  assert not report["passed"] and len(report["warnings"]) == 1
  assert "rises with eps" in report["warnings"][0] and "'a'" in report["warnings"][0]
  assert sanity_report(rising, worst, extra, tol=0.05)["passed"]
  bad = json.loads(json.dumps(extra))
  bad["linf"]["large_eps"]["accuracy"] = 0.01
  bad["linf"]["more_restarts"]["accuracy"] = 0.45
  msgs = sanity_report(good, worst, bad)["warnings"]
  assert len(msgs) == 2 and "large eps" in msgs[0] and "more restarts" in msgs[1]


def test_bad_input_raises():
  params, x, y, _, _ = two_class_problem(n=8)
  kw = dict(key=jax.random.key(0), attacks=SPECS[:1], progress=False, bounds=INF_BOX,
            large_eps={"linf": 10.0})  # fmt: skip
  with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 2\)"):
    jaxjac.evaluate(linear_apply, params, x, np.where(y == 0, 2, y), **kw)
  with pytest.raises(ValueError, match="`images` must lie in the box"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "bounds": (0.0, 1.0)})
  with pytest.raises(ValueError, match="method"):
    bad = (AttackSpec("x", "cw", "linf", (0.1,)),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="eps"):
    bad = (AttackSpec("x", "pgd", "linf", (0.1, -0.2)),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="steps"):
    bad = (AttackSpec("x", "pgd", "linf", (0.1,), steps=0),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="unique"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": SPECS[:1] * 2})
  with pytest.raises(ValueError, match="dlr"):
    bad = (AttackSpec("x", "apgd", "linf", (0.1,), loss="dlr"),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="noise_stds"):
    jaxjac.evaluate(linear_apply, params, x, y, noise_stds=(-0.1,), **kw)
  with pytest.raises(ValueError, match="key"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "key": None})
  with pytest.raises(ValueError, match="large_eps"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "large_eps": None})
  with pytest.raises(ValueError, match="large_eps"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "large_eps": {"l1": 1.0}})


def mlp_apply(p, x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]


def test_sanity_runs_are_paired_with_their_base_run():
  # With a near-zero step the attack's output is its random start, so an unpaired
  # "more steps" run would draw other starts and its accuracy would move both ways.
  # Paired (same key), twice the steps from the same start and three restarts that
  # contain the base run can only keep or lower the accuracy, for every key.
  k1, k2, kx = jax.random.split(jax.random.key(3), 3)
  params = {"w1": jax.random.normal(k1, (20, 16)), "w2": jax.random.normal(k2, (16, 3))}
  x = np.asarray(jax.random.normal(kx, (120, 20)))
  y = np.asarray(jnp.argmax(mlp_apply(params, jnp.asarray(x)), axis=1))
  spec = AttackSpec("pgd-rs", "pgd", "linf", (1.0,), steps=1, relative_step=1e-4)
  for seed in range(4):
    report = jaxjac.evaluate(
        mlp_apply, params, x, y, key=jax.random.key(seed), attacks=(spec,), noise_stds=(),
        batch_size=40, bounds=INF_BOX, large_eps={"linf": 100.0}, progress=False,
    )  # fmt: skip
    runs = report["sanity"]["runs"]["linf"]
    base = report["attacks"]["pgd-rs"]["accuracy"][0]
    assert 0.2 < base < 0.9  # random starts alone flip a fair share
    assert runs["more_steps"]["base_accuracy"] == base
    assert runs["more_steps"]["accuracy"] <= base
    assert runs["more_restarts"]["accuracy"] <= base
