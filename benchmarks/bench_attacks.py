"""What an attack step costs: PGD step versus one forward+backward pass, examples/s.

For the MLP and LeNet' (``jaxjac.models``, untrained weights, random inputs in
[0, 1]) at one batch size, times

* ``fwd_bwd_input``: one forward+backward pass for the input gradient
  (``value_and_grad`` of the summed cross-entropy with respect to ``x``), the
  work of one attack step;
* ``fwd_bwd_params``: one forward+backward pass for the parameter gradient
  (a training step without the optimizer);
* ``pgd10`` and ``pgd40``: ``jaxjac.attacks.pgd`` (l_inf, eps = 0.3, CE,
  random start), ``apgd40``: ``jaxjac.attacks.apgd`` (CE) and ``apgd_t40``:
  ``jaxjac.attacks.apgd_targeted`` (targeted DLR, 9 target classes, 40 steps
  each; reported relative to ``apgd40``, ideally about 9x), through the public
  functions, input validation included;
* ``apgd40_in_jit``: the same APGD called inside ``jax.jit``, where its 40
  iterations are one compiled loop. Called eagerly on CPU the attacks iterate
  from Python, one compiled iteration per call, because XLA:CPU compiles a
  convolution's input gradient inside a ``while`` loop to a slow generic loop
  nest; ``apgd40_in_jit_over_apgd40`` is what that saves (about 1 for the
  MLP, which has no convolution).

The configurations are timed interleaved (round robin, one call each per
round) so that all see the same machine load; times are medians after a
warm-up call (which also measures compilation). The cost of one PGD step is
the marginal ``(t_pgd40 - t_pgd10) / 30`` (fixed costs cancel), reported
relative to ``fwd_bwd_input`` and ``fwd_bwd_params``.

Run (CPU, under 3 minutes on 2 cores)::

  .venv/bin/python benchmarks/bench_attacks.py --out benchmarks/results/attacks_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxjac import attacks, models  # noqa: E402


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="benchmarks/results/attacks_cpu.json")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--reps", type=int, default=3, help="timed rounds per model")
  p.add_argument("--models", default="mlp,lenet")
  return p.parse_args(argv)


def _block(tree):
  return jax.block_until_ready(tree)


def bench_model(name: str, batch: int, reps: int) -> dict:
  model = models.get_model(name)
  kx, ky, kp = jax.random.split(jax.random.key(0), 3)
  x = jax.random.uniform(kx, (batch, 28, 28, 1))
  y = jax.random.randint(ky, (batch,), 0, 10)
  variables = model.init(kp, x)
  apply_fn = model.apply

  @jax.jit
  def fwd_bwd_input(variables, x, y):
    loss = lambda xb: jnp.sum(
      optax.softmax_cross_entropy_with_integer_labels(apply_fn(variables, xb), y)
    )
    return jax.value_and_grad(loss)(x)

  @jax.jit
  def fwd_bwd_params(variables, x, y):
    loss = lambda v: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(apply_fn(v, x), y))
    return jax.value_and_grad(loss)(variables)

  key = jax.random.key(1)
  pgd = lambda steps: (
    lambda: attacks.pgd(apply_fn, variables, x, y, eps=0.3, norm="linf", steps=steps, key=key)
  )
  apgd_in_jit = jax.jit(
    lambda v, xb, yb: attacks.apgd(apply_fn, v, xb, yb, eps=0.3, norm="linf", steps=40, key=key)
  )
  configs = {
      "fwd_bwd_input": lambda: fwd_bwd_input(variables, x, y),
      "fwd_bwd_params": lambda: fwd_bwd_params(variables, x, y),
      "pgd10": pgd(10),
      "pgd40": pgd(40),
      "apgd40": lambda: attacks.apgd(apply_fn, variables, x, y, eps=0.3, norm="linf", steps=40,
                                     key=key),
      "apgd40_in_jit": lambda: apgd_in_jit(variables, x, y),
      "apgd_t40": lambda: attacks.apgd_targeted(apply_fn, variables, x, y, eps=0.3, norm="linf",
                                                steps=40, num_targets=9, key=key),
  }  # fmt: skip
  first = {}
  for k, fn in configs.items():
    t0 = time.perf_counter()
    _block(fn())
    first[k] = time.perf_counter() - t0
  times = {k: [] for k in configs}
  for _ in range(reps):
    for k, fn in configs.items():
      t0 = time.perf_counter()
      _block(fn())
      times[k].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}
  step = (med["pgd40"] - med["pgd10"]) / 30
  return {
    "model": name,
    "batch": batch,
    "median_s": med,
    "all_s": times,
    "first_call_s": first,
    "pgd_step_s": step,
    "pgd_step_over_fwd_bwd_input": step / med["fwd_bwd_input"],
    "pgd_step_over_fwd_bwd_params": step / med["fwd_bwd_params"],
    "pgd40_over_40_fwd_bwd_input": med["pgd40"] / (40 * med["fwd_bwd_input"]),
    "pgd40_examples_per_s": batch / med["pgd40"],
    "apgd40_examples_per_s": batch / med["apgd40"],
    # APGD-T runs APGD once per target class: about 9x APGD (plus one forward per target).
    "apgd_t40_over_apgd40": med["apgd_t40"] / med["apgd40"],
    # One compiled loop (inside jax.jit) over the host-iterated loop (eager, CPU).
    "apgd40_in_jit_over_apgd40": med["apgd40_in_jit"] / med["apgd40"],
  }


def main(argv=None):
  args = _parse(argv)
  t0 = time.time()
  results = [bench_model(m, args.batch, args.reps) for m in args.models.split(",")]
  out = {
    "benchmark": "attacks",
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu_count": os.cpu_count(),
    "load_avg_at_end": os.getloadavg(),
    "jax": jax.__version__,
    "python": platform.python_version(),
    "reps": args.reps,
    "wall_s": None,
    "results": results,
  }
  out["wall_s"] = time.time() - t0
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  for r in results:
    print(
      f"{r['model']:6s} B={r['batch']}: fwd+bwd(x) {1e3 * r['median_s']['fwd_bwd_input']:.1f} ms, "
      f"fwd+bwd(params) {1e3 * r['median_s']['fwd_bwd_params']:.1f} ms, "
      f"PGD step {1e3 * r['pgd_step_s']:.1f} ms "
      f"({r['pgd_step_over_fwd_bwd_input']:.2f}x fwd+bwd(x), "
      f"{r['pgd_step_over_fwd_bwd_params']:.2f}x fwd+bwd(params)), "
      f"PGD-40 {r['pgd40_examples_per_s']:.0f} ex/s, "
      f"APGD-40 {r['apgd40_examples_per_s']:.0f} ex/s, "
      f"APGD-T-40 (9 targets) / APGD-40 {r['apgd_t40_over_apgd40']:.2f}x, "
      f"APGD-40 inside jax.jit / eager {r['apgd40_in_jit_over_apgd40']:.2f}x"
    )
  print(f"wrote {args.out} in {out['wall_s']:.0f} s")


if __name__ == "__main__":
  main()
