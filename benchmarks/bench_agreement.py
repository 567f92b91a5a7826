"""Agreement with an independent implementation: jaxjac's standard suite vs torchattacks.

The same trained LeNet' weights (a plain one and a Jacobian-regularized one,
lambda_JR = 0.01 with one random projection) are attacked on the same MNIST
test images by

* jaxjac: ``jaxjac.evaluate(..., suite="standard")`` -- APGD-CE, APGD-T (top 9
  targets), FAB-T (9 targets) and Square as AutoAttack's cascade, each attack on
  the examples the earlier ones left robust;
* torchattacks (the weights ported with ``benchmarks/torch_ref.py``): ``APGD``
  (CE), ``APGDT`` (``n_classes=10``: 9 targets), ``FAB`` (``multi_targeted=True``)
  and ``Square`` (margin loss, ``p_init=0.8``), run as the same cascade and each
  built explicitly with the same budget (torchattacks'
  ``AutoAttack(version="standard")`` uses 10 steps, not AutoAttack's 100).

An example counts as broken only if the returned point is misclassified and
inside the ball (``||x_adv - x|| <= eps + 1e-5``, the tolerance of
AutoAttack's own check; jaxjac's ``evaluate`` refuses points outside it).
Per model, norm and radius it reports each side's robust accuracy after each
attack (cumulative, as AutoAttack reports it) and at the end (the worst case),
the per-example agreement of the worst cases (both robust / only jaxjac robust /
only the reference robust / both broken), whether jaxjac is **never weaker**
(its worst case at most 0.5 points above the reference's) and both run times
(jaxjac's include compilation).

The work is split in units (model, norm, radius, chunk of ``--chunk`` images),
each written to ``--cache_dir`` when done: an interrupted run resumes, and
``--max_units`` spreads the table over several runs. The logits of the ported
model are compared with jaxjac's first.

Run (the full table takes hours on 2 CPU cores; it is an accelerator job)::

  python benchmarks/bench_agreement.py --tiny                      # a minute
  python benchmarks/bench_agreement.py --num_images 500 --data_dir DIR \\
      --out benchmarks/results/agreement.json                      # the full table

Needs ``torch`` and ``torchattacks`` (``pip install --no-deps torchattacks``);
never imported by the library or its tests.

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
from jaxjac import data, models  # noqa: E402
from jaxjac.robustness import standard_attacks  # noqa: E402

DEFAULT_EPS = {"linf": (0.1, 0.3), "l2": (1.0, 2.0)}
ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
METHODS = {"apgd": "apgd_ce", "apgd-t": "apgd_t", "fab-t": "fab_t", "square": "square"}
TOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--num_images", type=int, default=500)
  p.add_argument("--chunk", type=int, default=100, help="images per cached unit")
  p.add_argument(
    "--max_units", type=int, default=-1, help="new units this run (-1: all; 0: only report)"
  )
  p.add_argument("--cache_dir", default="", help="units are cached here (runs/agreement)")
  p.add_argument("--steps", type=int, default=100, help="APGD, APGD-T and FAB-T iterations")
  p.add_argument("--queries", type=int, default=5000, help="Square's query budget")
  p.add_argument("--models", default="plain,jr")
  p.add_argument("--norms", default="linf,l2")
  p.add_argument("--eps", default="", help="override radii, e.g. 'linf:0.1,l2:1.0'")
  p.add_argument("--attacks", default=",".join(ATTACKS))
  p.add_argument("--train_steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=64, help="training batch size")
  p.add_argument("--weights_dir", default="", help="trained weights (<cache_dir>/weights)")
  p.add_argument("--data_dir", default=os.environ.get("JAXJAC_DATA_DIR", ""))
  p.add_argument("--tiny", action="store_true", help="seconds-long dry run")
  p.add_argument("--out", default="")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--torch_device", default="", help="torchattacks' device (cuda when there)")
  p.add_argument(
    "--torch_threads", type=int, default=0, help="torch's CPU threads (0: torch's default)"
  )
  args = p.parse_args(argv)
  args.cache_dir = args.cache_dir or os.path.join(REPO, "runs", "agreement")
  args.weights_dir = args.weights_dir or os.path.join(args.cache_dir, "weights")
  if args.tiny:
    args.num_images, args.steps, args.queries, args.train_steps = 8, 2, 20, 5
    args.chunk = 4
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
  path = os.path.join(args.weights_dir, f"lenet_{kind}_{args.train_steps}_s{args.seed}.msgpack")
  if os.path.exists(path):
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
  os.makedirs(args.weights_dir, exist_ok=True)
  with open(path, "wb") as f:
    f.write(serialization.to_bytes(variables))
  return model, variables, loss


# ----------------------------------------------------------------------------
# The two sides, each a cascade: {"clean": (N,), "broken": {attack: (N,)}, "seconds": {attack: s}}.


def _size(adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
  d = (adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
  return np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))


def cascade(attack_fns, predict, x, y, norm: str, eps: float) -> dict:
  """AutoAttack's cascade of ``attack_fns`` (``[(name, fn(x, y) -> x_adv)]``): each on the
  examples correct at `x` and unbroken by the earlier ones. An example is broken by an
  attack when its point is misclassified and within ``eps + 1e-5`` of `x`."""
  clean = predict(x) == y
  robust, out = clean.copy(), {"clean": clean, "broken": {}, "seconds": {}}
  for name, fn in attack_fns:
    idx = np.flatnonzero(robust)
    broken = np.zeros(len(y), bool)
    t0 = time.perf_counter()
    if len(idx):
      adv = np.asarray(fn(x[idx], y[idx]))
      broken[idx] = (predict(adv) != y[idx]) & (_size(adv, x[idx], norm) <= eps + TOL)
    out["seconds"][name] = time.perf_counter() - t0
    out["broken"][name] = broken
    robust &= ~broken
  return out


def run_jaxjac(apply_fn, variables, x, y, norm, eps, args, which, key) -> dict:
  """``jaxjac.evaluate(..., suite="standard")`` at one radius, per example."""
  specs = standard_attacks(
    linf_eps=(eps,) if norm == "linf" else (), l2_eps=(eps,) if norm == "l2" else (),
    steps=args.steps, queries=args.queries,
  )  # fmt: skip
  specs = tuple(s for s in specs if METHODS[s.method] in which)
  rep = jaxjac.evaluate(
    apply_fn, variables, x, y, key=key, suite="standard", attacks=specs, noise_stds=(),
    batch_size=len(y), sanity=False, progress=False, return_per_example=True,
  )  # fmt: skip
  per = rep["per_example"]
  return {
    "clean": np.array(per["clean"]),
    "broken": {METHODS[s.method]: np.array(per["attacks"][s.name]["broken"][0]) for s in specs},
    "seconds": {METHODS[s.method]: rep["attacks"][s.name]["seconds"][0] for s in specs},
  }


def run_torch(model, x, y, norm, eps, args, which) -> dict:
  """torchattacks' four components with AutoAttack's budget, as the same cascade."""
  import torch
  import torchattacks

  tnorm = {"linf": "Linf", "l2": "L2"}[norm]
  device = next(model.parameters()).device

  def to_t(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))).to(device)

  def predict(a):
    with torch.no_grad():
      return model(to_t(a)).argmax(1).cpu().numpy()

  builders = {
    "apgd_ce": lambda: torchattacks.APGD(
      model, norm=tnorm, eps=eps, steps=args.steps, n_restarts=1, loss="ce", seed=args.seed
    ),
    "apgd_t": lambda: torchattacks.APGDT(
      model, norm=tnorm, eps=eps, steps=args.steps, n_restarts=1, n_classes=10, seed=args.seed
    ),
    "fab_t": lambda: torchattacks.FAB(
      model, norm=tnorm, eps=eps, steps=args.steps, n_restarts=1, multi_targeted=True,
      n_classes=10, seed=args.seed,
    ),
    "square": lambda: torchattacks.Square(
      model, norm=tnorm, eps=eps, n_queries=args.queries, n_restarts=1, p_init=0.8,
      loss="margin", resc_schedule=True, seed=args.seed,
    ),
  }  # fmt: skip

  def attack(name):
    def fn(xs, ys):
      adv = builders[name]()(to_t(xs), torch.from_numpy(ys.astype(np.int64)).to(device))
      return adv.detach().cpu().numpy().transpose(0, 2, 3, 1)

    return fn

  return cascade([(n, attack(n)) for n in which], predict, x, y, norm, eps)


# ----------------------------------------------------------------------------
# Units, their cache, and the table.


def _unit_record(side: dict) -> dict:
  return {
    "clean": side["clean"].tolist(),
    "broken": {k: v.tolist() for k, v in side["broken"].items()},
    "seconds": side["seconds"],
  }


def summarize(units: list[dict], which: list[str], *, margin: float = 0.005) -> dict:
  """One setting (model, norm, radius) from its units: per side the cumulative robust
  accuracy after each attack, the worst case and the seconds; the agreement of the
  worst-case masks; ``never_weaker``: jaxjac's worst case <= the reference's + `margin`."""
  out: dict = {"num_images": sum(len(u["jaxjac"]["clean"]) for u in units)}
  robust = {}
  for side in ("jaxjac", "reference"):
    clean = np.concatenate([np.array(u[side]["clean"], bool) for u in units])
    r, after = clean.copy(), {}
    for name in which:
      r &= ~np.concatenate([np.array(u[side]["broken"][name], bool) for u in units])
      after[name] = float(r.mean())
    robust[side] = r
    out[side] = {
      "clean": float(clean.mean()),
      "after": after,
      "worst": float(r.mean()),
      "seconds": {n: float(sum(u[side]["seconds"][n] for u in units)) for n in which},
    }
  a, b = robust["jaxjac"], robust["reference"]
  out["agreement"] = {
    "both_robust": int(np.sum(a & b)),
    "only_jaxjac_robust": int(np.sum(a & ~b)),
    "only_reference_robust": int(np.sum(~a & b)),
    "both_broken": int(np.sum(~a & ~b)),
  }
  out["difference_points"] = 100 * (out["jaxjac"]["worst"] - out["reference"]["worst"])
  out["never_weaker"] = bool(out["jaxjac"]["worst"] <= out["reference"]["worst"] + margin + 1e-12)
  return out


def markdown(report: dict) -> str:
  """The agreement table of ``benchmarks/README.md``."""
  lines = [
    "| model | norm | eps | images | jaxjac worst (APGD-CE / -T / FAB-T / Square) | time "
    "| torchattacks worst (same) | time | both robust / only jaxjac / only ref. / both broken "
    "| never weaker |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for kind, entry in report["models"].items():
    for s in entry["settings"]:
      j, r, g = s["jaxjac"], s["reference"], s["agreement"]
      steps = lambda side: " / ".join(f"{v:.3f}" for v in side["after"].values())
      n, asked = s["num_images"], s.get("num_requested", s["num_images"])
      images = f"{n}" if n == asked else f"{n} of {asked}"
      lines.append(
        f"| {kind} | {s['norm']} | {s['eps']:g} | {images} | **{j['worst']:.3f}** "
        f"({steps(j)}) | {sum(j['seconds'].values()):.0f} s | **{r['worst']:.3f}** "
        f"({steps(r)}) | {sum(r['seconds'].values()):.0f} s | {g['both_robust']} / "
        f"{g['only_jaxjac_robust']} / {g['only_reference_robust']} / {g['both_broken']} "
        f"| {'yes' if s['never_weaker'] else 'NO'} ({s['difference_points']:+.1f}) |"
      )
  return "\n".join(lines)


def _settings_key(args, which) -> dict:
  return {
    "steps": args.steps,
    "queries": args.queries,
    "seed": args.seed,
    "train_steps": args.train_steps,
    "attacks": which,
  }


def main(argv=None) -> dict:
  args = _parse(argv)
  import torch
  import torch_ref

  try:
    import torchattacks
  except ImportError as e:
    raise SystemExit("needs torchattacks: pip install --no-deps torchattacks") from e
  torch.manual_seed(args.seed)
  if args.torch_threads > 0:
    torch.set_num_threads(args.torch_threads)
  args.torch_device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
  ds = data.load_idx_dir(args.data_dir) if args.data_dir else data.load_mnist()
  x = np.asarray(ds.test_images[: args.num_images], np.float32)
  y = np.asarray(ds.test_labels[: args.num_images], np.int32)
  which = [a for a in args.attacks.split(",") if a]
  unknown = set(which) - set(ATTACKS)
  if unknown:
    raise SystemExit(f"--attacks: unknown {sorted(unknown)}; expected some of {ATTACKS}")
  radii = _radii(args)
  report = {
    "config": dict(vars(args)),
    "radii": radii,
    "platform": {
      "machine": platform.machine(),
      "processor": platform.processor(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "torch": torch.__version__,
      "torch_device": args.torch_device,
      "torchattacks": torchattacks.__version__,
      "cpu_count": os.cpu_count(),
      "torch_threads": torch.get_num_threads(),
    },
    "models": {},
  }
  new_units = 0
  for kind in [m for m in args.models.split(",") if m]:
    model, variables, _ = load_or_train(kind, ds, args)
    tmodel = torch_ref.load_flax_params(torch_ref.LeNet(), variables["params"]).eval()
    with torch.no_grad():
      zt = tmodel(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    tmodel = tmodel.to(args.torch_device)
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
        units = []
        for c, start in enumerate(range(0, len(y), args.chunk)):
          stop = min(start + args.chunk, len(y))
          path = os.path.join(args.cache_dir, f"{kind}_{norm}_{eps:g}_{start}-{stop}.json")
          key = {**_settings_key(args, which), "start": start, "stop": stop}
          unit = _read(path)
          if unit is None or unit.get("settings") != key:
            if 0 <= args.max_units <= new_units:
              break
            xs, ys = x[start:stop], y[start:stop]
            k = jax.random.fold_in(jax.random.key(args.seed), c)
            unit = {
              "settings": key,
              "jaxjac": _unit_record(
                run_jaxjac(model.apply, variables, xs, ys, norm, eps, args, which, k)
              ),
              "reference": _unit_record(run_torch(tmodel, xs, ys, norm, eps, args, which)),
            }
            _write(path, unit)
            new_units += 1
          units.append(unit)
        if not units:
          continue
        setting = {"norm": norm, "eps": eps, "num_requested": len(y), **summarize(units, which)}
        entry["settings"].append(setting)
        j, r = setting["jaxjac"], setting["reference"]
        print(
          f"[{kind}] {norm} eps={eps:g} ({setting['num_images']} images): jaxjac "
          f"{j['worst']:.3f} ({sum(j['seconds'].values()):.0f} s), torchattacks "
          f"{r['worst']:.3f} ({sum(r['seconds'].values()):.0f} s), never weaker: "
          f"{setting['never_weaker']}",
          flush=True,
        )
    report["models"][kind] = entry
  print(markdown(report))
  if args.out:
    _write(args.out, report)
  return report


def _read(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write(path: str, obj: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(f"{path}.tmp", "w") as f:
    json.dump(obj, f, indent=1, default=str)
  os.replace(f"{path}.tmp", path)
  print(f"wrote {path}", flush=True)


if __name__ == "__main__":
  main()
