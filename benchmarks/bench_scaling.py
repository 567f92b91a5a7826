"""Data-parallel throughput against the number of devices (jaxjac.sharding).

For each device count ``n`` a fresh process (on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``, set before JAX
starts) builds the mesh of its ``n`` devices and times, on the same global
batch (strong scaling):

* ``train``: the jitted training step of :func:`jaxjac.training.make_train_step`
  (LeNet', cross-entropy + ``lambda/2`` projection Jacobian penalty by
  default) wrapped by :func:`jaxjac.sharding.shard_train_step`;
* ``pgd``: :func:`jaxjac.attacks.pgd` (l_inf, 10 steps) wrapped by
  :func:`jaxjac.sharding.shard_attack`.

Times are medians of ``--steps`` calls after compilation (compile time is
reported apart); device counts run round-robin for ``--rounds`` rounds so
that all see the same machine load, and the best round's median is kept.
The inputs are synthetic MNIST-shaped images: throughput does not depend on
pixel values.

What the CPU numbers mean: host "devices" are partitions of the same CPU
cores, and XLA's CPU backend already spreads one device's work over all cores
with its own thread pool, so on a CPU more host devices cannot add compute;
the table measures what splitting the batch and the all-reduce cost. The
speed-up appears with real accelerators (one per device). On a GPU machine
the script runs once, on the GPU(s) JAX sees (a single GPU here: no scaling
is measured, only the sharded step's throughput on one device).

Run::

  .venv/bin/python benchmarks/bench_scaling.py --out benchmarks/results/scaling_cpu.json
  .venv/bin/python benchmarks/bench_scaling.py --devices 1,2 --model mlp --steps 5

Multi-host (one process per host, every host running the same command; the
worker reads the jax.distributed environment)::

  JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \\
      python benchmarks/bench_scaling.py --worker --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--devices", default="1,2,4", help="comma-separated host device counts (CPU)")
  p.add_argument("--model", default="lenet", choices=("lenet", "mlp"))
  p.add_argument("--batch", type=int, default=128, help="global batch size")
  p.add_argument("--steps", type=int, default=8, help="timed calls per round")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--jr-lambda", type=float, default=0.01, help="0 for a plain CE step")
  p.add_argument("--pgd-steps", type=int, default=10, help="0 to skip the attack timing")
  p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--out", default="benchmarks/results/scaling_cpu.json")
  p.add_argument(
    "--worker",
    action="store_true",
    help="run one measurement in this process (all its devices; multi-host aware)",
  )
  return p.parse_args(argv)


def _median_time(fn, steps):
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def worker(args) -> dict:
  """One measurement on every device this process (and its peers) sees."""
  import jax
  import numpy as np

  import jaxjac
  from jaxjac import attacks, sharding, training

  sharding.initialize_distributed()
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch, mesh, name="--batch")
  local = sharding.host_batch_size(args.batch, mesh)

  config = training.default_config()
  config.model.name = args.model
  if args.model == "mlp":
    config.model.features = (1024, 1024)
  config.batch_size = args.batch
  config.reg.jr_lambda = args.jr_lambda
  state = training.create_train_state(config, key=jax.random.key(0), steps_per_epoch=100)
  apply_fn = jaxjac.precision.with_precision(state.apply_fn, args.precision)
  state = state.replace(apply_fn=apply_fn)

  rng = np.random.default_rng([0, jax.process_index()])  # Each host: its own examples.
  x = rng.uniform(0, 1, (local, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, local).astype(np.int32)
  batch = sharding.shard_batch((x, y), mesh)
  key = jax.random.key(1)

  step = sharding.shard_train_step(training.make_train_step(config), mesh)
  state = sharding.replicate(state, mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, batch, key)  # Warm-up.
  jax.block_until_ready(metrics)
  holder = [state]

  def one_step():
    holder[0], m = compiled(holder[0], batch, key)
    jax.block_until_ready(m)

  train_s = _median_time(one_step, args.steps)
  result = {
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "platform": jax.devices()[0].platform,
    "device_kind": jax.devices()[0].device_kind,
    "model": args.model,
    "batch": args.batch,
    "jr_lambda": args.jr_lambda,
    "precision": args.precision,
    "train_compile_s": compile_s,
    "train_step_s": train_s,
    "train_examples_per_s": args.batch / train_s,
  }
  if args.pgd_steps:
    params = {"params": holder[0].params}
    attack = sharding.shard_attack(
      attacks.pgd, apply_fn, mesh, eps=0.3, norm="linf", steps=args.pgd_steps, step_size=0.01
    )
    jax.block_until_ready(attack(params, *batch, key))  # Compile and warm up.
    pgd_s = _median_time(
      lambda: jax.block_until_ready(attack(params, *batch, key)), max(2, args.steps // 2)
    )
    result.update(pgd_s=pgd_s, pgd_examples_per_s=args.batch / pgd_s)
  return result


def _spawn(args, n: int | None) -> dict:
  env = dict(os.environ)
  if n is not None:
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    "--worker",
    "--model",
    args.model,
    "--batch",
    str(args.batch),
    "--steps",
    str(args.steps),
    "--jr-lambda",
    str(args.jr_lambda),
    "--pgd-steps",
    str(args.pgd_steps),
    "--precision",
    args.precision,
  ]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"worker with {n} devices failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
  args = _parse(argv)
  if args.worker:
    result = worker(args)
    import jax

    if jax.process_index() == 0:
      print(json.dumps(result))
    return
  import jax

  backend = jax.default_backend()
  counts = [int(n) for n in args.devices.split(",")] if backend == "cpu" else [None]
  rounds: dict[str, list[dict]] = {}
  for r in range(args.rounds):
    for n in counts:
      res = _spawn(args, n)
      rounds.setdefault(str(res["devices"]), []).append(res)
      print(
        f"round {r} devices {res['devices']}: train {res['train_examples_per_s']:.1f} ex/s"
        + (f", pgd {res['pgd_examples_per_s']:.1f} ex/s" if "pgd_s" in res else ""),
        flush=True,
      )
  best = {n: min(rs, key=lambda res: res["train_step_s"]) for n, rs in rounds.items()}
  base = best[min(best, key=int)]
  table = []
  for n in sorted(best, key=int):
    b = best[n]
    row = {
      "devices": int(n),
      "train_examples_per_s": b["train_examples_per_s"],
      "train_speedup": base["train_step_s"] / b["train_step_s"],
      "train_compile_s": b["train_compile_s"],
    }
    if "pgd_s" in b:
      row.update(pgd_examples_per_s=b["pgd_examples_per_s"], pgd_speedup=base["pgd_s"] / b["pgd_s"])
    table.append(row)
  report = {
    "backend": backend,
    "machine": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "args": {k: v for k, v in vars(args).items() if k != "worker"},
    "table": table,
    "rounds": rounds,
  }
  print("| devices | train ex/s | speed-up | PGD ex/s | speed-up | compile s |")
  print("|---|---|---|---|---|---|")
  for row in table:
    print(
      f"| {row['devices']} | {row['train_examples_per_s']:.1f} | {row['train_speedup']:.2f} "
      f"| {row.get('pgd_examples_per_s', float('nan')):.1f} "
      f"| {row.get('pgd_speedup', float('nan')):.2f} | {row['train_compile_s']:.1f} |"
    )
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
