"""Wu and Li 2024 (arXiv:2412.12449) on MNIST: the Jacobian-regularized loss as a surrogate
of the adversarial loss (their Figure 1), and a lambda sweep of both regularizers.

Subcommands (each writes ``experiments/results/wu_li_<name>.json`` and
``experiments/figures/wu_li_<name>.png``):

* ``surrogate_vs_adversarial``: one training run per norm minimizing the
  Jacobian surrogate of the robust loss (``jaxjac.training.train`` with
  ``config.loss.name = "surrogate"``, ``experiments/configs/wu_li.py:NORM,surrogate``),

  .. math::
    \\ell(f(x), y) + \\epsilon\\, K_p\\, N_p(J), \\qquad
    N_2 = \\|J\\|_F,\\ K_2 = \\sqrt 2; \\quad N_\\infty = \\|J\\|_{1,1},\\ K_\\infty = 1,

  (:func:`jaxjac.jacobian_surrogate_loss`, exact Jacobians) with, at every
  checkpoint (13 steps apart) on fixed train and test batches, the surrogate,
  the first-order robust loss :func:`jaxjac.first_order_robust_loss` and the PGD
  adversarial loss ``max_{||delta||_p <= eps} l`` (20 PGD steps, highest-loss
  iterate) at the same ``eps`` (``eps_2 = 1.0``, ``eps_inf = 0.1``).
* ``lambda_sweep``: ``(lambda / 2) ||J||_F^2`` and ``(lambda / 2) ||J||_{1,1}``
  for two lambdas each plus ``lambda = 0`` (``experiments/configs/wu_li.py``):
  standard and robust train and test accuracy (``jaxjac.evaluate``'s standard
  suite: APGD-CE, APGD-T, FAB-T, Square), both generalization gaps and the
  Jacobian norms, and the rank correlation between norms and gaps.

Run::

  python experiments/wu_li.py surrogate_vs_adversarial --data_dir /path/to/mnist
  python experiments/wu_li.py lambda_sweep --data_dir /path/to/mnist
  python experiments/wu_li.py lambda_sweep --tiny --out /tmp/res --workdir /tmp/runs

``--tiny`` runs every config's ``:NORM,...,tiny`` variant; its numbers mean nothing.

References:
  Wu, Li. Adversarially robust generalization theory via Jacobian regularization.
  arXiv:2412.12449, 2024.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

import jaxjac
from jaxjac import attacks, training

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402
import plots  # noqa: E402


def _conf():
  return common.load_config_module("wu_li")


def _paths(args, name: str) -> tuple[str, str]:
  return (
    os.path.join(args.out, f"wu_li_{name}.json"),
    os.path.join(args.figures, f"wu_li_{name}.png"),
  )


# ----------------------------------------------------------------------------- figure 1


@functools.partial(jax.jit, static_argnums=0, static_argnames=("p", "eps"))
def _losses(apply_fn, params, x, y, x_adv, *, p, eps):
  ce = jaxjac.softmax_cross_entropy
  return {
    "ce": jnp.mean(ce(apply_fn(params, x), y)),
    "first_order": jaxjac.first_order_robust_loss(ce, apply_fn, params, x, y, eps=eps, p=p),
    "surrogate": jaxjac.jacobian_surrogate_loss(ce, apply_fn, params, x, y, eps=eps, p=p),
    "pgd_adversarial": jnp.mean(ce(apply_fn(params, x_adv), y)),
    "pgd_accuracy": jnp.mean(jnp.argmax(apply_fn(params, x_adv), -1) == y),
  }


def _loss_record(state, x, y, *, norm, key, steps) -> dict:
  """The clean, first-order, surrogate and PGD losses of `state` on ``(x, y)``."""
  conf = _conf()
  params, x, y = {"params": state.params}, jnp.asarray(x), jnp.asarray(y)
  eps = conf.EPS[norm]
  x_adv = attacks.pgd(
    state.apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, key=key, select="loss"
  )
  out = _losses(state.apply_fn, params, x, y, x_adv, p=conf.P[norm], eps=eps)
  return {k: float(v) for k, v in out.items()}


def surrogate_vs_adversarial(args) -> dict:
  """Trains on the Jacobian surrogate per norm (the library's training loop); at every
  checkpoint, the surrogate against the first-order and the PGD adversarial loss."""
  conf = _conf()
  dataset = common.load_data(args)
  runs = {}
  pgd_steps = 3 if args.tiny else 20
  key = jax.random.key(2412)
  for reg, norm in conf.NORM_OF_REG.items():
    config = common.get_config("wu_li", f"{reg},surrogate", tiny=args.tiny)
    workdir = os.path.join(args.workdir, "wu_li", f"surrogate_{reg}")
    state, summary, seconds = common.train_or_restore(config, workdir, dataset=dataset)
    train_x, train_y, test_x, test_y = common.train_data(config, dataset)
    n_eval = min(200, len(train_y), len(test_y))
    fixed = {
      "train": (train_x[:n_eval], train_y[:n_eval]),
      "test": (test_x[:n_eval], test_y[:n_eval]),
    }
    total, every = config.num_steps, config.checkpoint_every
    log = []
    for step in sorted({*range(every, total, every), total}):
      state = training.restore_checkpoint(workdir, state, step=step)
      rec = {"step": step}
      for split, (x, y) in fixed.items():
        k = jax.random.fold_in(key, step)
        vals = _loss_record(state, x, y, norm=norm, steps=pgd_steps, key=k)
        rec.update({f"{split}_{name}": v for name, v in vals.items()})
      log.append(rec)
    train_sur = [r["train_surrogate"] for r in log]
    train_pgd = [r["train_pgd_adversarial"] for r in log]
    runs[norm] = {
      "regularizer": reg,
      "eps": conf.EPS[norm],
      "p": conf.P[norm],
      "pgd_steps": pgd_steps,
      "num_eval": n_eval,
      "steps": total,
      "train_seconds": seconds,
      "final_test_accuracy": summary["test_accuracy"],
      "log": log,
      # Wu and Li's bound: the surrogate is above the first-order robust loss (a theorem,
      # up to float32 rounding) and, empirically, above the PGD adversarial loss.
      "surrogate_minus_first_order_min": float(
        min(r[f"{s}_surrogate"] - r[f"{s}_first_order"] for r in log for s in fixed)
      ),
      "surrogate_ge_pgd_fraction": float(np.mean(np.array(train_sur) >= np.array(train_pgd))),
      "corr_surrogate_pgd_train": float(np.corrcoef(train_sur, train_pgd)[0, 1]),
    }
    print(
      f"{norm}: final surrogate {train_sur[-1]:.3f}  pgd {train_pgd[-1]:.3f}  "
      f"corr {runs[norm]['corr_surrogate_pgd_train']:.3f} ({seconds:.0f} s)",
      flush=True,
    )
  record = common.record("wu_li_surrogate_vs_adversarial", args, dataset) | {
    "config": common.get_config("wu_li", "frobenius,surrogate", tiny=args.tiny).to_dict(),
    "optimizer": "adam 1e-3 on the surrogate loss (jaxjac.training.train, config.loss)",
    "runs": runs,
  }
  json_path, fig_path = _paths(args, "surrogate_vs_adversarial")
  common.write_json(json_path, record)
  plots.wu_li_surrogate(runs, fig_path)
  return record


# ----------------------------------------------------------------------------- lambda sweep


def spearman(a, b) -> float:
  """Spearman's rank correlation (``scipy.stats.spearmanr``); NaN for a constant input."""
  if np.ptp(np.asarray(a, float)) == 0 or np.ptp(np.asarray(b, float)) == 0:
    return float("nan")
  return float(scipy.stats.spearmanr(a, b).statistic)


def _sweep_run(args, reg: str, lam: float, dataset) -> dict:
  conf = _conf()
  name = "none" if lam == 0 else f"{reg}_{lam:g}"
  strength = common.attack_strength(args)
  cache = os.path.join(args.workdir, "wu_li_sweep", f"{name}.json")
  config = common.get_config("wu_li", f"{reg},{lam}", tiny=args.tiny)
  workdir = os.path.join(args.workdir, "wu_li", name)
  state, _, seconds = common.train_or_restore(config, workdir, dataset=dataset)
  train_x, train_y, test_x, test_y = common.train_data(config, dataset)
  n = min(args.num_robust, len(train_y), len(test_y))
  out = common.read_json(cache)
  if out is not None and (out["num_robust"], out["strength"]) == (n, strength):
    return out
  t0 = time.perf_counter()
  fn, params = state.apply_fn, {"params": state.params}
  tr = common.subset(len(train_y), n, seed=5)
  te = common.subset(len(test_y), n, seed=5)
  out = {
    "name": name,
    "regularizer": reg if lam else "none",
    "lambda": lam,
    "train_seconds": seconds,
    "num_train": int(len(train_y)),
    "num_test": int(len(test_y)),
    "num_robust": int(n),
    "strength": strength,
    "robust_eval": "jaxjac.evaluate(suite='standard'): APGD-CE, APGD-T, FAB-T, Square",
    "train_accuracy": common.accuracy(fn, params, train_x, train_y),
    "test_accuracy": common.accuracy(fn, params, test_x, test_y),
  }
  out["std_gap"] = out["train_accuracy"] - out["test_accuracy"]
  for split, (x, y) in (("train", (train_x[tr], train_y[tr])), ("test", (test_x[te], test_y[te]))):
    report = common.evaluate_worst(
      fn, params, x, y, conf.EPS, key=jax.random.fold_in(jax.random.key(2412), 1), **strength
    )
    out[f"sanity_{split}"] = report["sanity"]
    for norm, eps in conf.EPS.items():
      w = common.worst_summary(report, norm, eps)
      out[f"robust_{split}_{norm}"] = w["worst"]
      out[f"robust_{split}_{norm}_se"] = w["worst_se"]
      out[f"robust_{split}_{norm}_attacks"] = w
  for norm in conf.EPS:
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
  conf = _conf()
  dataset = common.load_data(args)
  none = _sweep_run(args, "frobenius", 0.0, dataset)
  sweeps = {}
  for reg, lams in conf.LAMBDAS.items():
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
    norm = conf.NORM_OF_REG[reg]
    correlations[reg] = {
      "spearman_norm_vs_std_gap": spearman(jn, [r["std_gap"] for r in rows]),
      "spearman_norm_vs_robust_gap": spearman(jn, [r[f"robust_gap_{norm}"] for r in rows]),
      "robust_gap_norm": norm,
    }
  record = common.record("wu_li_lambda_sweep", args, dataset) | {
    "eps": conf.EPS,
    "config": common.get_config("wu_li", "frobenius,0", tiny=args.tiny).to_dict(),
    "sweeps": sweeps,
    "correlations": correlations,
  }
  json_path, fig_path = _paths(args, "lambda_sweep")
  common.write_json(json_path, record)
  plots.wu_li_sweep(sweeps, conf.NORM_OF_REG, fig_path)
  return record


# ----------------------------------------------------------------------------- main


SUBCOMMANDS = {"surrogate_vs_adversarial": surrogate_vs_adversarial, "lambda_sweep": lambda_sweep}


OPTIONS = {
  "--num_robust": (int, 500, "train and test images for the robust accuracies"),
  "--max_lambdas": (int, 0, "first lambdas of each sweep only (0: all)"),
}


def main(argv=None) -> dict:
  args = common.parse(__doc__, SUBCOMMANDS, argv, OPTIONS, {"num_robust": 64})
  return common.run(SUBCOMMANDS, args)


if __name__ == "__main__":
  main()
