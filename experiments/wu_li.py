"""Wu and Li 2024 (arXiv:2412.12449) on MNIST: the Jacobian-regularized loss as a surrogate
of the adversarial loss (their Figure 1), and a lambda sweep of both regularizers.

Subcommands (each writes ``experiments/results/wu_li_<name>.json`` and
``experiments/figures/wu_li_<name>.png``):

* ``surrogate_vs_adversarial``: one training run per norm minimizing the
  Jacobian surrogate of the robust loss,

  .. math::
    \\ell(f(x), y) + \\epsilon\\, K_p\\, N_p(J), \\qquad
    N_2 = \\|J\\|_F,\\ K_2 = \\sqrt 2; \\quad N_\\infty = \\|J\\|_{1,1},\\ K_\\infty = 1,

  (:func:`jaxjac.jacobian_surrogate_loss`, exact Jacobians) with, every 20
  steps on fixed train and test batches, the surrogate, the first-order robust
  loss :func:`jaxjac.first_order_robust_loss` and the PGD adversarial loss
  ``max_{||delta||_p <= eps} l`` (20 PGD steps, highest-loss iterate) at the
  same ``eps`` (``eps_2 = 1.0``, ``eps_inf = 0.1``).
* ``lambda_sweep``: ``(lambda / 2) ||J||_F^2`` and ``(lambda / 2) ||J||_{1,1}``
  for two lambdas each plus ``lambda = 0`` (``experiments/configs/wu_li.py``):
  standard and robust (PGD) train and test accuracy, both generalization gaps
  and the Jacobian norms, and the rank correlation between norms and gaps.

Run::

  python experiments/wu_li.py surrogate_vs_adversarial
  python experiments/wu_li.py lambda_sweep
  python experiments/wu_li.py lambda_sweep --tiny --out /tmp/res --workdir /tmp/runs

``--tiny`` runs the seconds-long variants; its numbers mean nothing.

References:
  Wu, Li. Adversarially robust generalization theory via Jacobian regularization.
  arXiv:2412.12449, 2024.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

import jaxjac  # noqa: E402
from jaxjac import training  # noqa: E402

EPS = {"l2": 1.0, "linf": 0.1}
# Robust accuracy: per-example worst case over these attacks (jaxjac.evaluate).
ROBUST_EVAL = "worst of PGD-CE (1 start), PGD-CE (2 restarts), APGD-CE, APGD-DLR"
P = {"l2": 2.0, "linf": math.inf}
NORM_OF_REG = {"frobenius": "l2", "l11": "linf"}


def _paths(args, name: str) -> tuple[str, str]:
  return (
    os.path.join(args.out, f"wu_li_{name}.json"),
    os.path.join(args.figures, f"wu_li_{name}.png"),
  )


# ----------------------------------------------------------------------------- figure 1


@functools.partial(jax.jit, static_argnames=("p", "eps"))
def _surrogate_step(state, x, y, *, p, eps):
  def objective(params):
    return jaxjac.jacobian_surrogate_loss(
      jaxjac.softmax_cross_entropy, state.apply_fn, {"params": params}, x, y, eps=eps, p=p
    )

  loss, grads = jax.value_and_grad(objective)(state.params)
  return state.apply_gradients(grads=grads), loss


@functools.partial(jax.jit, static_argnames=("p", "eps"))
def _losses(state, x, y, x_adv, *, p, eps):
  params = {"params": state.params}
  ce = jaxjac.softmax_cross_entropy
  return {
    "ce": jnp.mean(ce(state.apply_fn(params, x), y)),
    "first_order": jaxjac.first_order_robust_loss(ce, state.apply_fn, params, x, y, eps=eps, p=p),
    "surrogate": jaxjac.jacobian_surrogate_loss(ce, state.apply_fn, params, x, y, eps=eps, p=p),
    "pgd_adversarial": jnp.mean(ce(state.apply_fn(params, x_adv), y)),
    "pgd_accuracy": jnp.mean(jnp.argmax(state.apply_fn(params, x_adv), -1) == y),
  }


def _loss_record(state, x, y, *, norm, key, steps):
  x_adv = common.attacks.pgd(
    state.apply_fn,
    {"params": state.params},
    jnp.asarray(x),
    jnp.asarray(y),
    eps=EPS[norm],
    norm=norm,
    steps=steps,
    key=key,
    select="loss",
  )
  out = _losses(state, jnp.asarray(x), jnp.asarray(y), x_adv, p=P[norm], eps=EPS[norm])
  return {k: float(v) for k, v in out.items()}


def surrogate_vs_adversarial(args) -> dict:
  """Trains on the Jacobian surrogate per norm; logs surrogate vs PGD adversarial loss."""
  dataset = common.load_data()
  runs = {}
  pgd_steps = 3 if args.tiny else 20
  for reg, norm in NORM_OF_REG.items():
    config = common.get_config("wu_li", f"{reg},0", tiny=args.tiny)
    train_x, train_y, test_x, test_y = common.train_data(config, dataset)
    n_eval = min(200, len(train_y), len(test_y))
    fixed = {
      "train": (train_x[:n_eval], train_y[:n_eval]),
      "test": (test_x[:n_eval], test_y[:n_eval]),
    }
    spe = len(train_y) // config.batch_size
    total = config.num_steps
    every = 8 if args.tiny else max(1, total // 15)
    root = jax.random.key(config.seed)
    state = training.create_train_state(
      config, key=jax.random.fold_in(root, 0), steps_per_epoch=spe
    )
    key = jax.random.fold_in(root, 2)
    log = []
    t0 = time.perf_counter()
    step = 0

    def record(step, state):
      rec = {"step": step}
      for split, (x, y) in fixed.items():
        vals = _loss_record(
          state, x, y, norm=norm, steps=pgd_steps, key=jax.random.fold_in(key, step)
        )
        rec.update({f"{split}_{k}": v for k, v in vals.items()})
      log.append(rec)
      print(
        f"{norm} step {step}: surrogate {rec['train_surrogate']:.3f}  pgd "
        f"{rec['train_pgd_adversarial']:.3f}  ce {rec['train_ce']:.3f}",
        flush=True,
      )

    record(0, state)
    epoch = 0
    while step < total:
      for x, y in jaxjac.data.batches(
        train_x, train_y, config.batch_size, seed=config.seed, epoch=epoch
      ):
        state, _ = _surrogate_step(state, jnp.asarray(x), jnp.asarray(y), p=P[norm], eps=EPS[norm])
        step += 1
        if step % every == 0 or step == total:
          record(step, state)
        if step >= total:
          break
      epoch += 1
    bound = [r["train_surrogate"] >= r["train_first_order"] - 1e-4 for r in log]
    above = [r["train_surrogate"] >= r["train_pgd_adversarial"] for r in log]
    runs[norm] = {
      "regularizer": reg,
      "eps": EPS[norm],
      "pgd_steps": pgd_steps,
      "num_eval": n_eval,
      "steps": total,
      "seconds": time.perf_counter() - t0,
      "log": log,
      "surrogate_ge_first_order_all": all(bound),
      "surrogate_ge_pgd_fraction": float(np.mean(above)),
      "corr_surrogate_pgd_train": float(
        np.corrcoef([r["train_surrogate"] for r in log], [r["train_pgd_adversarial"] for r in log])[
          0, 1
        ]
      ),
    }
  record_ = {
    "experiment": "wu_li_surrogate_vs_adversarial",
    "tiny": args.tiny,
    "environment": common.environment(),
    "config": common.get_config("wu_li", "frobenius,0", tiny=args.tiny).to_dict(),
    "optimizer": "adam 1e-3 on the surrogate loss",
    "runs": runs,
  }
  json_path, fig_path = _paths(args, "surrogate_vs_adversarial")
  common.write_json(json_path, record_)

  plt = common.setup_matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, (norm, run) in zip(axes, runs.items(), strict=True):
    steps = [r["step"] for r in run["log"]]
    for split, ls in (("train", "-"), ("test", "--")):
      ax.plot(
        steps,
        [r[f"{split}_surrogate"] for r in run["log"]],
        "C0" + ls,
        label=f"JR surrogate ({split})",
      )
      ax.plot(
        steps,
        [r[f"{split}_first_order"] for r in run["log"]],
        "C2" + ls,
        label=f"first-order robust ({split})",
      )
      ax.plot(
        steps,
        [r[f"{split}_pgd_adversarial"] for r in run["log"]],
        "C3" + ls,
        label=f"PGD adversarial ({split})",
      )
      ax.plot(steps, [r[f"{split}_ce"] for r in run["log"]], "C7" + ls, label=f"clean CE ({split})")
    name = "l_2, ||J||_F" if norm == "l2" else "l_inf, ||J||_{1,1}"
    ax.set_title(f"{name}, eps = {run['eps']:g}", fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
  return record_


# ----------------------------------------------------------------------------- lambda sweep


def _spearman(a, b) -> float:
  ra = np.argsort(np.argsort(a))
  rb = np.argsort(np.argsort(b))
  if np.std(ra) == 0 or np.std(rb) == 0:
    return float("nan")
  return float(np.corrcoef(ra, rb)[0, 1])


def _sweep_run(args, reg: str, lam: float, dataset) -> dict:
  name = "none" if lam == 0 else f"{reg}_{lam:g}"
  cache = os.path.join(args.workdir, "wu_li_sweep", f"{name}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      out = json.load(f)
    n = min(args.num_robust, out["num_train"], out["num_test"])
    if out.get("robust_eval") == ROBUST_EVAL and out["num_robust"] == n:
      return out
  config = common.get_config("wu_li", f"{reg},{lam}", tiny=args.tiny)
  workdir = os.path.join(args.workdir, "wu_li", name)
  state, summary, seconds = common.train_or_restore(config, workdir, dataset=dataset)
  t0 = time.perf_counter()
  train_x, train_y, test_x, test_y = common.train_data(config, dataset)
  fn, params = state.apply_fn, {"params": state.params}
  n = min(args.num_robust, len(train_y), len(test_y))
  tr = common.subset(len(train_y), n, seed=5)
  te = common.subset(len(test_y), n, seed=5)
  key = jax.random.key(2412)
  steps = 3 if args.tiny else 20
  out = {
    "name": name,
    "regularizer": reg if lam else "none",
    "lambda": lam,
    "train_seconds": seconds,
    "num_train": int(len(train_y)),
    "num_test": int(len(test_y)),
    "num_robust": int(n),
    "pgd_steps": steps,
    "robust_eval": ROBUST_EVAL,
    "train_accuracy": common.accuracy(fn, params, train_x, train_y),
    "test_accuracy": common.accuracy(fn, params, test_x, test_y),
  }
  out["std_gap"] = out["train_accuracy"] - out["test_accuracy"]
  specs = common.attack_specs({n: (e,) for n, e in EPS.items()}, EPS, steps=steps, restarts=2)
  for split, (x, y) in (("train", (train_x[tr], train_y[tr])), ("test", (test_x[te], test_y[te]))):
    report = jaxjac.evaluate(
      fn, params, x, y, key=jax.random.fold_in(key, 1), attacks=specs, noise_stds=(),
      batch_size=min(n, 250), progress=False,
    )  # fmt: skip
    out[f"sanity_{split}"] = report["sanity"]
    for norm, eps in EPS.items():
      w = common.worst_summary(report, norm, eps)
      out[f"robust_{split}_{norm}"] = w["worst"]
      out[f"robust_{split}_{norm}_attacks"] = w
  for norm in EPS:
    out[f"robust_gap_{norm}"] = out[f"robust_train_{norm}"] - out[f"robust_test_{norm}"]
  for split, x in (("train", train_x[tr]), ("test", test_x[te])):
    norms = common.jacobian_norms(fn, params, x)
    out[f"jacobian_fro_{split}"] = norms["jacobian_fro"]
    out[f"jacobian_l11_{split}"] = norms["jacobian_l11"]
  out["eval_seconds"] = time.perf_counter() - t0
  common.write_json(cache, out)
  return out


def lambda_sweep(args) -> dict:
  """Trains the sweep (lambda = 0 shared) and evaluates gaps and norms."""
  wconf = common.load_config_module("wu_li")
  dataset = common.load_data()
  none = _sweep_run(args, "frobenius", 0.0, dataset)
  sweeps = {}
  for reg, lams in wconf.LAMBDAS.items():
    lams = lams[: args.max_lambdas] if args.max_lambdas else lams
    sweeps[reg] = [none] + [_sweep_run(args, reg, lam, dataset) for lam in lams]
    for r in sweeps[reg]:
      print(
        f"{r['name']:16s} train {r['train_accuracy']:.3f} test {r['test_accuracy']:.3f} "
        f"rob-l2 {r['robust_train_l2']:.3f}/{r['robust_test_l2']:.3f} rob-linf "
        f"{r['robust_train_linf']:.3f}/{r['robust_test_linf']:.3f} ||J||_F "
        f"{r['jacobian_fro_test']:.2f} ||J||_11 {r['jacobian_l11_test']:.1f}",
        flush=True,
      )
  correlations = {}
  for reg, rows in sweeps.items():
    jn = [r["jacobian_fro_test" if reg == "frobenius" else "jacobian_l11_test"] for r in rows]
    norm = NORM_OF_REG[reg]
    correlations[reg] = {
      "spearman_norm_vs_std_gap": _spearman(jn, [r["std_gap"] for r in rows]),
      "spearman_norm_vs_robust_gap": _spearman(jn, [r[f"robust_gap_{norm}"] for r in rows]),
      "robust_gap_norm": norm,
    }
  record = {
    "experiment": "wu_li_lambda_sweep",
    "tiny": args.tiny,
    "environment": common.environment(),
    "eps": EPS,
    "config": common.get_config("wu_li", "frobenius,0", tiny=args.tiny).to_dict(),
    "sweeps": sweeps,
    "correlations": correlations,
  }
  json_path, fig_path = _paths(args, "lambda_sweep")
  common.write_json(json_path, record)

  plt = common.setup_matplotlib()
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  for row, (reg, rows) in enumerate(sweeps.items()):
    norm = NORM_OF_REG[reg]
    lams = [r["lambda"] for r in rows]
    xs = np.arange(len(lams))
    ax = axes[row, 0]
    ax.plot(xs, [r["train_accuracy"] for r in rows], "C0-o", label="train")
    ax.plot(xs, [r["test_accuracy"] for r in rows], "C0--o", label="test")
    ax.plot(xs, [r[f"robust_train_{norm}"] for r in rows], "C3-s", label=f"robust train ({norm})")
    ax.plot(xs, [r[f"robust_test_{norm}"] for r in rows], "C3--s", label=f"robust test ({norm})")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax = axes[row, 1]
    ax.plot(xs, [r["std_gap"] for r in rows], "C0-o", label="standard gap")
    ax.plot(xs, [r[f"robust_gap_{norm}"] for r in rows], "C3-s", label=f"robust gap ({norm})")
    ax.set_ylabel("train - test accuracy")
    ax.legend(fontsize=7)
    for ax in axes[row, :2]:
      ax.set_xticks(xs, [f"{lam:g}" for lam in lams])
      ax.set_xlabel(f"lambda ({reg})")
    ax = axes[row, 2]
    key_ = "jacobian_fro_test" if reg == "frobenius" else "jacobian_l11_test"
    jn = [r[key_] for r in rows]
    ax.plot(jn, [r["std_gap"] for r in rows], "C0o", label="standard gap")
    ax.plot(jn, [r[f"robust_gap_{norm}"] for r in rows], "C3s", label=f"robust gap ({norm})")
    ax.set_xlabel("test " + ("||J||_F" if reg == "frobenius" else "||J||_{1,1}"))
    ax.set_xscale("log")
    ax.set_ylabel("gap")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(fig_path, dpi=100)
  plt.close(fig)
  return record


# ----------------------------------------------------------------------------- main


SUBCOMMANDS = {"surrogate_vs_adversarial": surrogate_vs_adversarial, "lambda_sweep": lambda_sweep}


def parse(argv):
  p = common.parser(__doc__, SUBCOMMANDS)
  p.add_argument(
    "--num_robust", type=int, default=500, help="train and test images for the robust accuracies"
  )
  p.add_argument(
    "--max_lambdas", type=int, default=0, help="first lambdas of each sweep only (0: all)"
  )
  args = p.parse_args(argv)
  if args.tiny:
    args.num_robust = min(args.num_robust, 64)
  return common.resolve_dirs(args)


def main(argv=None) -> dict:
  return common.run(SUBCOMMANDS, parse(argv))


if __name__ == "__main__":
  main()
