"""Agreement with an independent implementation: jaxjac's attacks vs torchattacks.

The same trained LeNet' weights (a plain one and a Jacobian-regularized one,
lambda_JR = 0.01 with one random projection, as ``experiments/configs/jr.py``)
are attacked on the same MNIST test images by

* jaxjac: ``attacks.apgd`` (APGD-CE), ``attacks.apgd`` with ``loss="dlr"`` and
  ``target`` for each of the top-9 classes (APGD-T), ``jaxjac.attacks.fab`` (FAB-T)
  and ``jaxjac.attacks.square`` (Square), and ``jaxjac.evaluate(...,
  suite="standard")`` when it exists;
* torchattacks (the weights ported with ``benchmarks/torch_ref.py``): ``APGD``
  (CE), ``APGDT`` (``n_classes=10``), ``FAB`` (``multi_targeted=True``) and
  ``Square`` (margin loss, ``p_init=0.8``), each built explicitly with the same
  budget: torchattacks' ``AutoAttack(version="standard")`` uses 10 steps, not
  AutoAttack's 100.

Per model, norm, radius and attack it reports the robust accuracy of each
implementation, the per-example agreement (both robust / only jaxjac robust /
only the reference robust / both broken) and the run time (jaxjac's includes
compilation). An example counts as broken only if the returned point is
misclassified and inside the ball (``||x_adv - x|| <= eps + 1e-5``, the
tolerance of AutoAttack's own check). ``worst`` is the ensemble: robust
against all four attacks. The logits of the ported model are compared with
jaxjac's first.

Run (CPU; the full run takes hours on 2 cores, use a GPU or fewer images)::

  python benchmarks/bench_agreement.py --tiny                      # seconds
  python benchmarks/bench_agreement.py --num_images 200 --norms linf --eps linf:0.1 \\
      --out benchmarks/results/agreement_cpu_small.json
  python benchmarks/bench_agreement.py --num_images 500 \\
      --out benchmarks/results/agreement.json                      # the full table

Needs ``torch`` and ``torchattacks`` (``pip install torchattacks``); never
imported by the library or its tests.

References:
  Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble
  of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  Kim. Torchattacks: A PyTorch repository for adversarial attacks.
  arXiv:2010.01950, 2020.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxjac  # noqa: E402
from jaxjac import attacks, data, models  # noqa: E402
from jaxjac._src.attacks.fab import fab  # noqa: E402
from jaxjac._src.attacks.square import square  # noqa: E402

DEFAULT_EPS = {"linf": (0.1, 0.3), "l2": (1.0, 2.0)}
ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
TOL = 1e-5


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--num_images", type=int, default=500)
  p.add_argument("--steps", type=int, default=100, help="APGD, APGD-T and FAB-T iterations")
  p.add_argument("--queries", type=int, default=5000, help="Square's query budget")
  p.add_argument("--models", default="plain,jr")
  p.add_argument("--norms", default="linf,l2")
  p.add_argument("--eps", default="", help="override radii, e.g. 'linf:0.1,l2:1.0'")
  p.add_argument("--attacks", default=",".join(ATTACKS))
  p.add_argument("--train_steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=64, help="training batch size")
  p.add_argument("--weights_dir", default="", help="load/save trained weights here")
  p.add_argument("--data_dir", default=os.environ.get("JAXJAC_DATA_DIR", ""))
  p.add_argument("--tiny", action="store_true", help="seconds-long dry run")
  p.add_argument("--out", default="")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if args.tiny:
    args.num_images, args.steps, args.queries, args.train_steps = 8, 2, 20, 5
    args.eps = args.eps or "linf:0.1,l2:1.0"
  return args


def _radii(args) -> dict[str, tuple[float, ...]]:
  norms = [n for n in args.norms.split(",") if n]
  if not args.eps:
    return {n: DEFAULT_EPS[n] for n in norms}
  out: dict[str, list[float]] = {}
  for item in args.eps.split(","):
    norm, value = item.split(":")
    out.setdefault(norm, []).append(float(value))
  return {n: tuple(out[n]) for n in norms if n in out}


# ----------------------------------------------------------------------------
# Training (a plain optax loop) and the weights.


def train_lenet(kind: str, ds, steps: int, batch: int, seed: int):
  """LeNet' trained with Adam (1e-3) on CE, plus (0.01 / 2) ||J||_F^2 (one projection) for JR."""
  model = models.get_model("lenet")
  key = jax.random.key(seed)
  variables = model.init(key, jnp.zeros((1, 28, 28, 1)))
  opt = optax.adam(1e-3)
  state = opt.init(variables)

  def loss_fn(v, x, y, k):
    logits = model.apply(v, x)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    if kind == "jr":
      pen = jaxjac.jacobian_penalty(model.apply, v, x, key=k, estimator="projection")
      loss = loss + 0.5 * 0.01 * pen
    return loss

  @jax.jit
  def step(v, s, x, y, k):
    loss, g = jax.value_and_grad(loss_fn)(v, x, y, k)
    upd, s = opt.update(g, s, v)
    return optax.apply_updates(v, upd), s, loss

  rng = np.random.default_rng(seed)
  n = len(ds.train_images)
  for i in range(steps):
    idx = rng.integers(0, n, batch)
    variables, state, loss = step(
      variables, state, ds.train_images[idx], ds.train_labels[idx], jax.random.fold_in(key, i)
    )
  return model, variables, float(loss)


def load_or_train(kind: str, ds, args):
  from flax import serialization

  model = models.get_model("lenet")
  path = os.path.join(args.weights_dir, f"lenet_{kind}.msgpack") if args.weights_dir else ""
  if path and os.path.exists(path):
    template = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    with open(path, "rb") as f:
      return model, serialization.from_bytes(template, f.read()), None
  t0 = time.perf_counter()
  model, variables, loss = train_lenet(kind, ds, args.train_steps, args.batch, args.seed)
  print(
    f"trained {kind}: {args.train_steps} steps, last loss {loss:.4f}, "
    f"{time.perf_counter() - t0:.0f} s",
    flush=True,
  )
  if path:
    os.makedirs(args.weights_dir, exist_ok=True)
    with open(path, "wb") as f:
      f.write(serialization.to_bytes(variables))
  return model, variables, loss


# ----------------------------------------------------------------------------
# The two sides.


def _size(adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
  d = (adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
  return np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))


def _robust(predict, adv, x, y, norm, eps) -> np.ndarray:
  """Robust: correct at x and not (misclassified at adv inside the ball)."""
  correct = predict(x) == y
  broken = (predict(adv) != y) & (_size(adv, x, norm) <= eps + TOL)
  return correct & ~broken


def _top_targets(logits: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
  z = logits.copy()
  z[np.arange(len(y)), y] = -np.inf
  return np.argsort(-z, axis=1, kind="stable")[:, :k].T


def run_jaxjac(apply_fn, variables, x, y, norm, eps, args, which) -> dict:
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  key = jax.random.key(args.seed)
  predict = lambda a: np.asarray(jnp.argmax(apply_fn(variables, jnp.asarray(a)), axis=1))
  out = {}
  for name in which:
    t0 = time.perf_counter()
    if name == "apgd_ce":
      adv = attacks.apgd(
        apply_fn, variables, xj, yj, eps=eps, norm=norm, steps=args.steps, key=key, loss="ce"
      )
      robust = _robust(predict, np.asarray(adv), x, y, norm, eps)
    elif name == "apgd_t":
      logits = np.asarray(apply_fn(variables, xj))
      robust = predict(x) == y
      for i, t in enumerate(_top_targets(logits, y, 9)):
        adv = attacks.apgd(
          apply_fn,
          variables,
          xj,
          yj,
          eps=eps,
          norm=norm,
          steps=args.steps,
          key=jax.random.fold_in(key, i),
          loss="dlr",
          target=jnp.asarray(t),
        )
        robust &= _robust(predict, np.asarray(adv), x, y, norm, eps)
    elif name == "fab_t":
      adv = fab(apply_fn, variables, xj, yj, eps=eps, norm=norm, key=key, steps=args.steps)
      robust = _robust(predict, np.asarray(adv), x, y, norm, eps)
    elif name == "square":
      adv = square(apply_fn, variables, xj, yj, eps=eps, norm=norm, key=key, queries=args.queries)
      robust = _robust(predict, np.asarray(adv), x, y, norm, eps)
    else:
      raise ValueError(f"unknown attack {name!r}")
    out[name] = (robust, time.perf_counter() - t0)
    print(f"  jaxjac {name}: robust {robust.mean():.3f} in {out[name][1]:.1f} s", flush=True)
  return out


def run_standard_suite(apply_fn, variables, x, y, norm, eps, args):
  """``jaxjac.evaluate(..., suite="standard")``, or None where it does not exist yet."""
  try:
    t0 = time.perf_counter()
    result = jaxjac.evaluate(
      apply_fn,
      variables,
      x,
      y,
      key=jax.random.key(args.seed),
      suite="standard",
      noise_stds=(),
      sanity=False,
      progress=False,
    )
  except TypeError as e:
    print(f"standard suite not available ({e})", flush=True)
    return None
  return {"result": result, "seconds": time.perf_counter() - t0, "norm": norm, "eps": eps}


def run_torch(model, x, y, norm, eps, args, which) -> dict:
  import torch
  import torchattacks

  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(y.astype(np.int64))
  tnorm = {"linf": "Linf", "l2": "L2"}[norm]

  def predict(a):
    with torch.no_grad():
      t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
      return model(t).argmax(1).numpy()

  builders = {
    "apgd_ce": lambda: torchattacks.APGD(
      model, norm=tnorm, eps=eps, steps=args.steps, n_restarts=1, loss="ce", seed=args.seed
    ),
    "apgd_t": lambda: torchattacks.APGDT(
      model, norm=tnorm, eps=eps, steps=args.steps, n_restarts=1, n_classes=10, seed=args.seed
    ),
    "fab_t": lambda: torchattacks.FAB(
      model,
      norm=tnorm,
      eps=eps,
      steps=args.steps,
      n_restarts=1,
      multi_targeted=True,
      n_classes=10,
      seed=args.seed,
    ),
    "square": lambda: torchattacks.Square(
      model,
      norm=tnorm,
      eps=eps,
      n_queries=args.queries,
      n_restarts=1,
      p_init=0.8,
      loss="margin",
      resc_schedule=True,
      seed=args.seed,
    ),
  }
  out = {}
  for name in which:
    t0 = time.perf_counter()
    adv = builders[name]()(xt, yt).detach().numpy().transpose(0, 2, 3, 1)
    out[name] = (_robust(predict, adv, x, y, norm, eps), time.perf_counter() - t0)
    print(
      f"  torchattacks {name}: robust {out[name][0].mean():.3f} in {out[name][1]:.1f} s", flush=True
    )
  return out


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
  return {
    "both_robust": int(np.sum(a & b)),
    "only_jaxjac_robust": int(np.sum(a & ~b)),
    "only_reference_robust": int(np.sum(~a & b)),
    "both_broken": int(np.sum(~a & ~b)),
  }


def main(argv=None) -> dict:
  args = _parse(argv)
  import torch
  import torch_ref

  torch.manual_seed(args.seed)
  path = args.data_dir or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared",
    "data",
    "mnist",
  )
  ds = data.load_idx_dir(path) if os.path.isdir(path) else data.load_mnist()
  x = np.asarray(ds.test_images[: args.num_images], np.float32)
  y = np.asarray(ds.test_labels[: args.num_images], np.int32)
  which = [a for a in args.attacks.split(",") if a]
  radii = _radii(args)
  report = {
    "config": {k: v for k, v in vars(args).items()},
    "radii": radii,
    "platform": {
      "machine": platform.machine(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "torch": torch.__version__,
      "cpu_count": os.cpu_count(),
    },
    "models": {},
  }
  try:
    import torchattacks

    report["platform"]["torchattacks"] = torchattacks.__version__
  except ImportError as e:
    raise SystemExit("needs torchattacks: pip install torchattacks") from e

  for kind in [m for m in args.models.split(",") if m]:
    model, variables, _ = load_or_train(kind, ds, args)
    tmodel = torch_ref.load_flax_params(torch_ref.LeNet(), variables["params"]).eval()
    with torch.no_grad():
      zt = tmodel(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    zj = np.asarray(model.apply(variables, jnp.asarray(x)))
    entry = {
      "clean_accuracy": float(np.mean(np.argmax(zj, 1) == y)),
      "logits_max_abs_diff": float(np.abs(zt - zj).max()),
      "prediction_agreement": float(np.mean(np.argmax(zt, 1) == np.argmax(zj, 1))),
      "settings": [],
    }
    print(
      f"[{kind}] clean {entry['clean_accuracy']:.3f}, ported logits max |diff| "
      f"{entry['logits_max_abs_diff']:.2e}",
      flush=True,
    )
    for norm, eps_list in radii.items():
      for eps in eps_list:
        jx = run_jaxjac(model.apply, variables, x, y, norm, eps, args, which)
        tr = run_torch(tmodel, x, y, norm, eps, args, which)
        setting = {"norm": norm, "eps": eps, "attacks": {}}
        for name in which + ["worst"]:
          if name == "worst":
            a = np.logical_and.reduce([jx[n][0] for n in which])
            b = np.logical_and.reduce([tr[n][0] for n in which])
            ta, tb = sum(jx[n][1] for n in which), sum(tr[n][1] for n in which)
          else:
            (a, ta), (b, tb) = jx[name], tr[name]
          row = {
            "jaxjac_robust_acc": float(a.mean()),
            "reference_robust_acc": float(b.mean()),
            "jaxjac_seconds": ta,
            "reference_seconds": tb,
            **_agreement(a, b),
          }
          setting["attacks"][name] = row
          print(
            f"[{kind}] {norm} eps={eps:g} {name:8s} jaxjac {row['jaxjac_robust_acc']:.3f} "
            f"({ta:6.1f} s)  torchattacks {row['reference_robust_acc']:.3f} ({tb:6.1f} s)  "
            f"agree {row['both_robust']}/{row['only_jaxjac_robust']}/"
            f"{row['only_reference_robust']}/{row['both_broken']}",
            flush=True,
          )
        suite = run_standard_suite(model.apply, variables, x, y, norm, eps, args)
        if suite is not None:
          setting["standard_suite"] = suite
        entry["settings"].append(setting)
    report["models"][kind] = entry

  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1, default=str)
    print(f"wrote {args.out}")
  return report


if __name__ == "__main__":
  main()
