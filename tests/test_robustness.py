"""The standard suite's schedule, the worst case per radius, per-example results and the
AutoAttack sanity checks, each with a model built to trip it."""

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxjac
from jaxjac._src.robustness import evaluation, registry, sanity
from jaxjac.robustness import AttackSpec, GradientMaskingWarning, standard_attacks

INF_BOX = (-math.inf, math.inf)


def linear_apply(p, x):
  return x.reshape(x.shape[0], -1) @ p["w"].T + p["b"][None, :]


def masked_apply(p, x):
  """The linear model behind a zero input gradient (inputs through `stop_gradient`)."""
  return linear_apply(p, jax.lax.stop_gradient(x))


def softmax_apply(p, x):
  return jax.nn.softmax(linear_apply(p, x), axis=-1)


def noisy_apply(p, x):
  """Logits plus fresh host noise at every call: a randomized model."""
  shape = jax.ShapeDtypeStruct((x.shape[0], p["w"].shape[0]), x.dtype)
  noise = jax.pure_callback(
    lambda: np.random.default_rng().normal(size=shape.shape).astype(shape.dtype), shape
  )
  return linear_apply(p, x) + 1e-3 * noise


def problem(n=60, d=6, classes=4, seed=0):
  """A random linear model on inputs in [0, 1], labelled with its own predictions."""
  kw, kx = jax.random.split(jax.random.key(seed))
  params = {"w": jax.random.normal(kw, (classes, d)), "b": jnp.zeros(classes)}
  x = np.asarray(jax.random.uniform(kx, (n, d)))
  y = np.asarray(jnp.argmax(linear_apply(params, jnp.asarray(x)), axis=1)).astype(np.int32)
  return params, x, y


def exact_linf(params, x, y, eps):
  """Closed form without the box: robust iff z_y - z_c > eps ||w_y - w_c||_1 for all c."""
  w, z = np.asarray(params["w"]), x @ np.asarray(params["w"]).T
  robust = np.ones(len(y), bool)
  for c in range(w.shape[0]):
    gap = z[np.arange(len(y)), y] - z[:, c]
    reach = eps * np.abs(w[y] - w[c]).sum(axis=1)
    robust &= (c == y) | (gap > reach)
  return robust


def closed_form_attack(spec, eps, apply_fn, params, x, y, *, key, bounds):
  """A gradient-free stand-in that knows the linear model: the l_inf optimum per class."""
  del spec, apply_fn, key
  w = params["w"]
  best = x
  for c in range(w.shape[0]):
    cand = jnp.clip(x + eps * jnp.sign(w[c][None] - w[y]), *bounds)
    better = (cand @ w.T)[jnp.arange(len(y)), c] - (cand @ w.T)[jnp.arange(len(y)), y]
    now = (best @ w.T)[jnp.arange(len(y)), c] - (best @ w.T)[jnp.arange(len(y)), y]
    best = jnp.where(((better > now) & (c != y))[:, None], cand, best)
  return best


def test_worst_case_per_radius_with_different_grids_no_false_warning():
  # A strong attack at eps 0.1 and 0.3 and a weak one (random start only) at 0.2: the
  # worst case at 0.2 is the weak attack's alone and lies above the one at 0.1. That is
  # not a rise of a worst case over nested attack sets: no GradientMaskingWarning.
  params, x, y = problem(classes=2, d=10, n=120)
  x = 4 * (x - 0.5)
  specs = (
    AttackSpec("pgd-margin", "pgd", "linf", (0.1, 0.3), steps=3, loss="margin"),
    AttackSpec("noise", "pgd", "linf", (0.2,), steps=1, relative_step=0.0),
  )
  with warnings.catch_warnings():
    warnings.simplefilter("error", GradientMaskingWarning)
    report = jaxjac.evaluate(
        linear_apply, params, x, y, key=jax.random.key(1), suite="fast", attacks=specs,
        noise_stds=(), bounds=INF_BOX, large_eps={"linf": 10.0}, progress=False,
    )  # fmt: skip
  worst = report["worst_case"]["linf"]
  assert worst["eps"] == [0.1, 0.2, 0.3]
  assert worst["attacks"] == [["pgd-margin"], ["noise"], ["pgd-margin"]]
  exact = [float(np.mean(exact_linf(params, x, y, e))) for e in (0.1, 0.3)]
  np.testing.assert_allclose([worst["accuracy"][0], worst["accuracy"][2]], exact, atol=1e-12)
  assert worst["accuracy"][1] > worst["accuracy"][0] + 0.05  # the weak one at 0.2
  assert report["sanity"]["passed"], report["sanity"]["warnings"]


def _recording(log, name, attack):
  def run(spec, eps, apply_fn, params, x, y, *, key, bounds):
    log.append((name, eps, np.asarray(x)))
    return attack(spec, eps, apply_fn, params, x, y, key=key, bounds=bounds)

  return run


def _rows(images, xs):
  """Indices of the rows of `xs` in `images` (each row is unique)."""
  return {int(np.flatnonzero(np.all(images == r, axis=1))[0]) for r in xs}


def test_standard_suite_cascade_per_attack_and_per_example(monkeypatch):
  # APGD-CE and APGD-T for real, FAB-T and Square as stand-ins that record what they get:
  # each attack sees only the examples every earlier one left robust at that radius.
  params, x, y = problem()
  log = []

  def identity(spec, eps, apply_fn, params, x, y, *, key, bounds):
    time.sleep(0.05)  # a known cost per batch, for the reported seconds
    return x

  monkeypatch.setitem(
    registry.RUNNERS, "fab-t", registry.Runner(_recording(log, "fab", identity), False)
  )
  monkeypatch.setitem(
    registry.RUNNERS, "square",
    registry.Runner(_recording(log, "square", closed_form_attack), True),
  )  # fmt: skip
  for name in ("apgd", "apgd-t"):
    monkeypatch.setitem(
      registry.RUNNERS, name,
      registry.Runner(_recording(log, name, registry.RUNNERS[name].run), False),
    )  # fmt: skip
  specs = standard_attacks(linf_eps=(0.05, 0.15), l2_eps=(), steps=10)
  specs = tuple(s._replace(num_targets=3) if s.num_targets else s for s in specs)
  report = jaxjac.evaluate(
      linear_apply, params, x, y, key=jax.random.key(0), attacks=specs, noise_stds=(),
      batch_size=16, sanity=False, progress=False, return_per_example=True,
  )  # fmt: skip
  assert report["suite"] == "standard"
  per = report["per_example"]
  clean = np.array(per["clean"])
  assert clean.all()  # labels are the model's predictions
  order = ["apgd-ce-linf", "apgd-t-linf", "fab-t-linf", "square-linf"]
  kinds = {"apgd": order[0], "apgd-t": order[1], "fab": order[2], "square": order[3]}
  for k, eps in enumerate((0.05, 0.15)):
    robust = clean.copy()
    for name in order:
      broken = np.array(per["attacks"][name]["broken"][k])
      seen = set().union(*(_rows(x, xs) for kind, e, xs in log if kinds[kind] == name and e == eps))
      assert seen == set(np.flatnonzero(robust)), name  # only the still-robust ones
      assert report["attacks"][name]["num_attacked"][k] == len(seen)
      batches = -(-len(seen) // 16)
      if name == "fab-t-linf":  # its stand-in sleeps 0.05 s per batch
        assert 0.05 * batches <= report["attacks"][name]["seconds"][k] < 0.05 * batches + 1.0
      assert not (broken & ~robust).any()
      robust &= ~broken
      acc = report["attacks"][name]["accuracy"][k]
      assert acc == pytest.approx(robust.mean())  # cumulative, as AutoAttack reports
      assert report["attacks"][name]["num_broken"][k] == broken.sum()
    np.testing.assert_array_equal(per["worst_case"]["linf"]["robust"][k], robust)
    assert report["worst_case"]["linf"]["accuracy"][k] == pytest.approx(robust.mean())
    # No attack breaks an example that is provably robust (the closed form without the box).
    assert not (exact_linf(params, x, y, eps) & ~robust).any()
  # Each call got its examples padded only to the next power of two (at most 16).
  for _, _, xs in log:
    assert len(xs) == evaluation.padded_size(len(_rows(x, xs)), 16) <= 16
  assert any(len(xs) < 16 for _, _, xs in log)  # the cascade's late attacks: small batches
  # APGD-CE and APGD-T did real work: the first radius needs no stand-in to break some.
  assert report["attacks"]["apgd-ce-linf"]["num_broken"][1] > 0


def test_fast_suite_runs_each_attack_on_all_clean_examples(monkeypatch):
  params, x, y = problem(n=40)
  log = []
  monkeypatch.setitem(
    registry.RUNNERS,
    "apgd",
    registry.Runner(_recording(log, "apgd", registry.RUNNERS["apgd"].run), False),
  )
  specs = (
    AttackSpec("a", "apgd", "linf", (0.2,), steps=5),
    AttackSpec("b", "apgd", "linf", (0.2,), steps=5, loss="dlr"),
  )
  report = jaxjac.evaluate(
      linear_apply, params, x, y, key=jax.random.key(0), suite="fast", attacks=specs,
      noise_stds=(), sanity=False, progress=False, return_per_example=True,
  )  # fmt: skip
  assert [len(_rows(x, xs)) for _, _, xs in log] == [40, 40]
  a, b = (np.array(report["per_example"]["attacks"][k]["broken"][0]) for k in "ab")
  assert report["attacks"]["b"]["accuracy"][0] == pytest.approx(1 - b.mean())
  assert report["worst_case"]["linf"]["accuracy"][0] == pytest.approx(1 - (a | b).mean())


SMALL = (AttackSpec("pgd", "pgd", "linf", (0.05, 0.1), steps=5),)


@pytest.mark.parametrize(
  "apply_fn,field,value,message",
  [
    (linear_apply, None, None, None),
    (noisy_apply, "max_output_change", lambda v: v > 0, "randomized model"),
    (softmax_apply, "probability_rows", lambda v: v == 1.0, "look like probabilities"),
    (masked_apply, "zero_gradient_fraction", lambda v: v == 1.0, "zero input gradients at 100.0%"),
  ],
)
def test_model_checks_flag_the_model_built_to_trip_them(apply_fn, field, value, message):
  params, x, y = problem(n=32)
  found = sanity.model_checks(apply_fn, params, jnp.asarray(x), jnp.asarray(y))
  report = sanity.sanity_report({}, {}, {}, model=found)
  if field is None:  # The plain linear model passes every check.
    assert found == {
      "max_output_change": 0.0,
      "probability_rows": 0.0,
      "zero_gradient_fraction": 0.0,
    }
    assert report["passed"]
  else:
    assert value(found[field]), found
    assert len(report["warnings"]) == 1 and message in report["warnings"][0]


def test_evaluate_reports_model_checks():
  params, x, y = problem(n=32)
  with pytest.warns(GradientMaskingWarning, match="look like probabilities"):
    report = jaxjac.evaluate(
        softmax_apply, params, x, y, key=jax.random.key(2), suite="fast", attacks=SMALL,
        noise_stds=(), progress=False,
    )  # fmt: skip
  assert report["sanity"]["model"]["probability_rows"] == 1.0


def test_sanity_flags_zero_gradients_and_gradient_free_win(monkeypatch):
  # Inputs through stop_gradient: every clean gradient is zero, PGD is blind, and a
  # gradient-free attack (the closed-form stand-in) breaks what PGD could not.
  params, x, y = problem(n=48)
  monkeypatch.setitem(registry.RUNNERS, "square", registry.Runner(closed_form_attack, True))
  specs = SMALL + (AttackSpec("square", "square", "linf", (0.05, 0.1), queries=10),)
  with pytest.warns(GradientMaskingWarning) as caught:
    report = jaxjac.evaluate(
        masked_apply, params, x, y, key=jax.random.key(2), suite="fast", attacks=specs,
        noise_stds=(), progress=False,
    )  # fmt: skip
  msg = " ".join(str(w.message) for w in caught)
  assert report["sanity"]["model"]["zero_gradient_fraction"] == 1.0
  assert "zero input gradients at 100.0%" in msg
  free = report["sanity"]["runs"]["linf"]["gradient_free"]
  assert free["eps"] == [0.05, 0.1]
  assert free["accuracy"][1] < free["white_box_accuracy"][1] - 0.1
  assert "gradient-free attack beats the white-box ones" in msg
  # The same suite on the unmasked model: no zero gradients, no large gradient-free win.
  strong = AttackSpec(
    "pgd", "pgd", "linf", (0.05, 0.1), steps=20, loss="margin", relative_step=0.25
  )
  clean = jaxjac.evaluate(
      linear_apply, params, x, y, key=jax.random.key(2), suite="fast", attacks=(strong, specs[1]),
      noise_stds=(), progress=False,
  )  # fmt: skip
  assert clean["sanity"]["model"]["zero_gradient_fraction"] == 0.0
  free = clean["sanity"]["runs"]["linf"]["gradient_free"]
  assert max(np.subtract(free["white_box_accuracy"], free["accuracy"])) < 0.05


def test_evaluate_rejects_bad_values():
  params, x, y = problem(n=8)
  kw = dict(key=jax.random.key(0), attacks=SMALL, progress=False)
  with pytest.raises(ValueError, match="`images` must be finite"):
    jaxjac.evaluate(linear_apply, params, np.where(np.eye(8, 6) > 0, np.nan, x), y, **kw)
  with pytest.raises(ValueError, match="`images` must be finite"):
    jaxjac.evaluate(linear_apply, params, np.where(np.eye(8, 6) > 0, np.inf, x), y, bounds=INF_BOX,
                    **kw)  # fmt: skip
  with pytest.raises(ValueError, match="eps"):
    jaxjac.evaluate(linear_apply, params, x, y, key=jax.random.key(0), progress=False,
                    attacks=(AttackSpec("p", "pgd", "linf", (float("nan"),)),))  # fmt: skip
  with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 4\)"):
    jaxjac.evaluate(linear_apply, params, x, np.full(8, -1), **kw)
  with pytest.raises(ValueError, match="suite"):
    jaxjac.evaluate(linear_apply, params, x, y, suite="autoattack", **kw)
  with pytest.raises(ValueError, match="single PRNG key"):
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "key": jax.random.split(kw["key"])})
  with pytest.raises(ValueError, match="relative_step applies to"):
    bad = (AttackSpec("a", "apgd", "linf", (0.1,), relative_step=0.1),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="queries"):
    bad = (AttackSpec("s", "square", "linf", (0.1,), steps=10),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})
  with pytest.raises(ValueError, match="num_targets"):
    bad = (AttackSpec("t", "apgd-t", "linf", (0.1,), num_targets=9),)
    jaxjac.evaluate(linear_apply, params, x, y, **{**kw, "attacks": bad})


def test_attack_outside_the_ball_is_not_counted(monkeypatch):
  params, x, y = problem(n=8)
  cheat = lambda spec, eps, apply_fn, params, x, y, *, key, bounds: x + 2 * eps  # noqa: E731
  monkeypatch.setitem(registry.RUNNERS, "square", registry.Runner(cheat, True))
  with pytest.raises(RuntimeError, match="outside the linf ball"):
    jaxjac.evaluate(
        linear_apply, params, x, y, key=jax.random.key(0), progress=False, sanity=False,
        attacks=(AttackSpec("s", "square", "linf", (0.1,)),), bounds=INF_BOX,
    )  # fmt: skip


def test_padded_size_is_the_next_power_of_two_capped_by_the_batch():
  sizes = [evaluation.padded_size(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)]
  assert sizes == [1, 2, 4, 8, 8, 16, 16]
  assert [evaluation.padded_size(n, 100) for n in (60, 64, 65, 100)] == [64, 64, 100, 100]
