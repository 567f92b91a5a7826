"""What amortized Jacobian regularization costs per training step (LeNet', batch 128).

The library's own train step (:func:`jaxjac.training.make_train_step`, Adam
1e-3, ``lambda_JR = 0.01``, Frobenius projection estimator, n = 1) in these
configurations, every one timed interleaved in one process:

* ``plain``: no penalty;
* ``full``: the penalty on the whole batch every step (``jr_fraction = 1``,
  ``jr_every = 1``: the same program, so those two rows are this one);
* ``fraction_1/2``, ``fraction_1/4``: sub-batch JR;
* ``every_2``, ``every_4``, ``every_8``: lazy JR, two compiled programs
  (with and without the penalty) chosen on the host
  (:class:`jaxjac.training.LazyTrainStep`). A single program with
  ``lax.cond`` measured 4.1x (k = 8) to 17.6x (k = 2) the plain step on CPU
  (``results/amortized_cpu_quick_laxcond.json``), slower than full JR;
* ``--estimator jvp``: the same rows with the JVP estimator (cheapest per step);
* ``torch_plain``, ``torch_full``: PyTorch's JR step of
  ``benchmarks/torch_ref.py`` (Hoffman et al.'s algorithm), when importable.

A round runs 8 consecutive steps of each configuration in turn (a whole
lazy cycle for ``k <= 8``, so the amortized cost is the round's mean step);
the reported time is the median over rounds of the mean step time, and the
ratio is to the plain step of the same implementation in the same run
(``torch_full`` also against JAX's plain step).

Run::

  python benchmarks/bench_amortized.py --quick
  python benchmarks/bench_amortized.py --rounds 30 --out benchmarks/results/amortized_cpu.json
  python benchmarks/bench_amortized.py --estimator jvp --no-torch --out ...
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxjac import training  # noqa: E402

LAM = 0.01
STEPS_PER_ROUND = 8


def _config(estimator="projection", **reg):
  c = training.default_config()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.quench_epochs = ()
  c.reg.jr_estimator = estimator
  c.reg.jr_num_projections = 1
  for k, v in reg.items():
    c.reg[k] = v
  return c


def _batches(batch: int, n: int = STEPS_PER_ROUND):
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(n, batch, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=(n, batch)).astype(np.int32)
  return [(jnp.asarray(x[i]), jnp.asarray(y[i])) for i in range(n)]


def _jax_case(steps, batch, batches):
  """``steps``: ``step -> compiled fn``; returns ``run()`` doing one round."""
  config = _config()
  state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=100)
  chooser = steps.pop("choose", None)
  compiled = {}
  t0 = time.perf_counter()
  for name, fn in steps.items():
    compiled[name] = fn.lower(state, batches[0], jax.random.key(1)).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "step": 0}

  def run():
    s = holder["state"]
    for i in range(STEPS_PER_ROUND):
      fn = compiled["main"] if chooser is None else compiled[chooser(holder["step"])]
      s, m = fn(s, batches[i], jax.random.key(1))
      holder["step"] += 1
    jax.block_until_ready(m["loss"])
    holder["state"] = s

  return run, compile_s


def _torch_cases(batch, batches):
  try:
    import torch  # noqa: PLC0415
    import torch_ref  # noqa: PLC0415
  except ImportError as err:
    print(f"PyTorch rows skipped: {err}")
    return {}
  from jaxjac import models  # noqa: PLC0415

  params = models.LeNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  out = {}
  for name, mode in (("torch_plain", "plain"), ("torch_full", "projection")):
    tm = torch_ref.load_flax_params(torch_ref.LeNet(), params)
    step = torch_ref.make_train_step(tm, mode=mode, lam=LAM, num_projections=1)
    tb = [
      (
        torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(np.asarray(y).astype(np.int64)),
      )
      for x, y in batches
    ]
    t0 = time.perf_counter()
    step(*tb[0])

    def run(step=step, tb=tb):
      for x, y in tb:
        step(x, y)

    out[name] = (run, time.perf_counter() - t0)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--rounds", type=int, default=15)
  p.add_argument("--quick", action="store_true", help="5 rounds")
  p.add_argument("--configs", default="", help="comma-separated subset of the JAX rows")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument(
    "--estimator",
    default="projection",
    choices=("projection", "jvp"),
    help="the JAX rows' single-sample estimator (PyTorch's row is always projection)",
  )
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  rounds = 5 if args.quick else args.rounds
  batches = _batches(args.batch)

  def spec(**reg):
    return {"main": training.make_train_step(_config(args.estimator, **reg))}

  specs = {
    "plain": spec(),
    "full": spec(jr_lambda=LAM),
    "fraction_1/2": spec(jr_lambda=LAM, jr_fraction=0.5),
    "fraction_1/4": spec(jr_lambda=LAM, jr_fraction=0.25),
  }
  for k in (2, 4, 8):
    specs[f"every_{k}"] = spec(jr_lambda=LAM, jr_every=k)
  if args.configs:
    specs = {k: v for k, v in specs.items() if k in args.configs.split(",") or k == "plain"}
  cases = {}
  for name, steps in specs.items():
    print(f"compiling {name}", flush=True)
    cases[name] = _jax_case(steps, args.batch, batches)
  if not args.no_torch:
    cases.update(_torch_cases(args.batch, batches))
  for run, _ in cases.values():
    run()  # warm-up round
  times = {name: [] for name in cases}
  for r in range(rounds):
    for name, (run, _) in cases.items():
      t0 = time.perf_counter()
      run()
      times[name].append((time.perf_counter() - t0) / STEPS_PER_ROUND)
    print(f"round {r + 1}/{rounds}", flush=True)
  med = {name: float(np.median(ts)) for name, ts in times.items()}
  rows = []
  for name, ts in times.items():
    base = "torch_plain" if name.startswith("torch") else "plain"
    q25, q75 = np.percentile(ts, [25, 75])
    row = {
      "name": name,
      "median_ms": 1e3 * med[name],
      "q25_ms": 1e3 * float(q25),
      "q75_ms": 1e3 * float(q75),
      "ratio_to_plain": med[name] / med[base],
      "compile_s": cases[name][1],
    }
    if name.startswith("torch"):
      row["ratio_to_jax_plain"] = med[name] / med["plain"]
    rows.append(row)
  print(
    f"\nLeNet' batch {args.batch}, {args.estimator} n=1, {jax.default_backend()}, "
    f"{rounds} rounds of {STEPS_PER_ROUND} steps; amortized ms per step (median over rounds)"
  )
  print(f"{'config':16s} {'ms/step':>9s} {'IQR':>15s} {'x plain':>8s}")
  for r in rows:
    extra = f"  ({r['ratio_to_jax_plain']:.2f}x JAX plain)" if "ratio_to_jax_plain" in r else ""
    print(
      f"{r['name']:16s} {r['median_ms']:9.2f} {r['q25_ms']:7.2f}-{r['q75_ms']:<7.2f} "
      f"{r['ratio_to_plain']:8.2f}{extra}"
    )
  print("jr_fraction=1 and jr_every=1 are the 'full' program.")
  if args.out:
    record = {
      "benchmark": "amortized_jr",
      "batch": args.batch,
      "estimator": args.estimator,
      "rounds": rounds,
      "steps_per_round": STEPS_PER_ROUND,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "machine": platform.platform(),
      "cpu_count": os.cpu_count(),
      "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(record, f, indent=1)
    print(f"wrote {args.out}")
  return rows


if __name__ == "__main__":
  main()
