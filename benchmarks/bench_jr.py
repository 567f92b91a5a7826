"""What Jacobian regularization costs: time per training step, compile time, memory.

One script for every table of ``benchmarks/README.md``:

* ``parity``: the PyTorch reference (``benchmarks/torch_ref.py``) and jaxjac
  compute the same penalty (exact, and projection with the same ``v``) and
  the same parameter gradient on the same weights.
* ``main``: LeNet' and the MLP at batch 128, one Adam step of
  ``CE + lambda/2 * penalty`` for: plain CE; Frobenius projection n=1, n=3;
  the JVP estimator; exact by each method (``auto``: the default;
  ``vjp``: vmap over the C one-hot cotangents, ``loop``: the C VJPs unrolled
  on one forward pass, ``jacrev``: vmap of jacrev, ``scan``: a rematerialized
  loop over classes);
  l_{1,1} projection and exact; PyTorch plain / projection n=1, 3 / exact.
* ``scaling``: against the number of classes C (synthetic head: 10, 100,
  1000) and the input size (28, 56, 112 pixels a side): the MLP timed,
  LeNet' by XLA memory analysis only.
* ``attacks``: PGD-40 and APGD-100 (l_inf, CE) examples per second.
* ``pool`` (not in the default sections): LeNet' steps (plain, projection n=1) with
  the library's max-pool, reshape + ``jnp.max`` and ``nn.max_pool``, as ratios.
* ``variants``: CPU speed work (max-pool by reshape, 2 host devices with
  GSPMD or ``shard_map``; with ``--with-patches`` also conv by
  ``conv_general_dilated_patches`` + matmul), PyTorch in the same table.
* ``xlaflags`` (not in the default sections): LeNet' steps in fresh
  processes under XLA flags.

Every configuration of a table is timed interleaved (round robin, one step
each) so that all see the same machine load; times are medians of steps of
ahead-of-time compiled executables, compile time is measured apart,
and memory is XLA's compiled memory analysis (argument + output + temp -
aliased bytes), the peak of the step's buffers. Ratios are to the plain step
of the same model in the same table.

Run (CPU; the default sections compile about 70 steps, which alone takes
10-15 minutes on 2 idle cores, and several times that under load)::

  .venv/bin/python benchmarks/bench_jr.py --out benchmarks/results/cpu_run1.json
  .venv/bin/python benchmarks/bench_jr.py --report benchmarks/results/cpu_run1.json \
      benchmarks/results/cpu_run2.json

GPU (fill the GPU table of the README)::

  python benchmarks/bench_jr.py --host-devices 1 --batch-large 1024 \
      --out benchmarks/results/gpu_run1.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", default="benchmarks/results/cpu_run.json")
  p.add_argument(
    "--sections",
    default="parity,main,variants,attacks,scaling",
    help="comma-separated; also: xlaflags (fresh process per XLA flag set)",
  )
  p.add_argument(
    "--host-devices",
    type=int,
    default=2,
    help="XLA host-platform devices (CPU only; 2 allows the split variants)",
  )
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--batch-large", type=int, default=0, help="extra main table at this batch (GPU)")
  p.add_argument("--reps", type=int, default=20, help="timed steps per configuration")
  p.add_argument("--min-reps", type=int, default=3)
  p.add_argument(
    "--cap-s",
    type=float,
    default=8.0,
    help="stop timing a configuration after this many seconds once min-reps are done",
  )
  p.add_argument(
    "--mem-limit-gb",
    type=float,
    default=6.0,
    help="compile but do not run steps whose XLA peak exceeds this",
  )
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--models", default="lenet,mlp", help="main: models to time")
  p.add_argument(
    "--configs",
    default=",".join(
      [
        "plain",
        "proj1",
        "proj3",
        "jvp1",
        "exact_auto",
        "exact_vjp",
        "exact_loop",
        "exact_jacrev",
        "exact_scan",
        "l11_proj1",
        "l11_exact",
        "torch_plain",
        "torch_proj1",
        "torch_proj3",
        "torch_exact_loop",
      ]
    ),
    help="main: configurations to time (JAX names of JR_CONFIGS and torch_*)",
  )
  p.add_argument(
    "--with-patches",
    action="store_true",
    help="variants: also LeNet' with conv_general_dilated_patches + matmul (slow)",
  )
  p.add_argument(
    "--xla-extra", default="", help="(internal) extra XLA_FLAGS for --sections xlaflag"
  )
  p.add_argument(
    "--report",
    nargs="+",
    default=None,
    help="write tables (markdown) and plots from these JSON files, run nothing",
  )
  return p.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.report is None:
  flags = os.environ.get("XLA_FLAGS", "")
  if ARGS.host_devices > 1:
    flags += f" --xla_force_host_platform_device_count={ARGS.host_devices}"
  if ARGS.xla_extra:
    flags += " " + ARGS.xla_extra
  os.environ["XLA_FLAGS"] = flags.strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxjac  # noqa: E402
from jaxjac import models  # noqa: E402

LAM = 0.01
HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- models


def max_pool(x, window=(2, 2)):
  """Max-pool by reshape + ``jnp.max``: the library's pool before the tie fix (its derivative
  splits the cotangent evenly among tied maxima; nn.max_pool sends it to the first)."""
  b, h, w, c = x.shape
  kh, kw = window
  x = x[:, : h // kh * kh, : w // kw * kw, :]
  return x.reshape(b, h // kh, kh, w // kw, kw, c).max(axis=(2, 4))


class LeNetFlaxPool(nn.Module):
  """jaxjac.models.LeNet with ``flax.linen.max_pool`` (``reduce_window``), same parameters."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, *, train=False):
    pool = lambda h: nn.max_pool(h, (2, 2), strides=(2, 2))
    x = pool(nn.relu(nn.Conv(32, (5, 5), padding="SAME")(x)))
    x = pool(nn.relu(nn.Conv(64, (5, 5), padding="SAME")(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(1024)(x))
    return nn.Dense(self.num_classes)(x)


class LeNetReshapePool(nn.Module):
  """jaxjac.models.LeNet with max-pooling by reshape + jnp.max (same parameter tree)."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, *, train=False):
    x = max_pool(nn.relu(nn.Conv(32, (5, 5), padding="SAME")(x)))
    x = max_pool(nn.relu(nn.Conv(64, (5, 5), padding="SAME")(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(1024)(x))
    return nn.Dense(self.num_classes)(x)


class _PatchConv(nn.Module):
  """SAME conv as ``conv_general_dilated_patches`` + one matmul (Flax kernel layout)."""

  features: int
  kernel: tuple[int, int] = (5, 5)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    cin = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, cin, self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    patches = jax.lax.conv_general_dilated_patches(
      x, (kh, kw), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # Patch features are ordered (cin, kh, kw).
    w = jnp.transpose(k, (2, 0, 1, 3)).reshape(cin * kh * kw, self.features)
    return patches @ w + b


class LeNetPatches(nn.Module):
  """LeNet' with convs as patches + matmul and max-pool by reshape."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, *, train=False):
    x = max_pool(nn.relu(_PatchConv(32, name="Conv_0")(x)))
    x = max_pool(nn.relu(_PatchConv(64, name="Conv_1")(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(1024, name="Dense_0")(x))
    return nn.Dense(self.num_classes, name="Dense_1")(x)


def make_model(name: str, num_classes: int = 10):
  if name == "lenet":
    return models.LeNet(num_classes=num_classes)
  if name == "lenet_reshape_pool":
    return LeNetReshapePool(num_classes=num_classes)
  if name == "lenet_flax_pool":
    return LeNetFlaxPool(num_classes=num_classes)
  if name == "lenet_patches":
    return LeNetPatches(num_classes=num_classes)
  if name == "mlp":
    return models.MLP(num_classes=num_classes)
  raise ValueError(f"unknown model {name!r}")


def init_params(model, image: int, seed: int = 0):
  x = jnp.zeros((1, image, image, 1), jnp.float32)
  return model.init(jax.random.key(seed), x)["params"]


def make_batch(batch: int, image: int, num_classes: int, seed: int = 1):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, (batch, image, image, 1), jnp.float32)
  y = jax.random.randint(ky, (batch,), 0, num_classes)
  return x, y


# --------------------------------------------------------------------------- JAX steps

# name -> keyword arguments of jaxjac.jacobian_penalty (None: plain CE).
JR_CONFIGS = {
  "plain": None,
  "proj1": dict(estimator="projection", num_projections=1),
  "proj3": dict(estimator="projection", num_projections=3),
  "jvp1": dict(estimator="jvp", num_projections=1),
  "exact_vjp": dict(estimator="exact", method="vjp"),
  "exact_jacrev": dict(estimator="exact", method="jacrev"),
  "exact_scan": dict(estimator="exact", method="scan"),
  "exact_loop": dict(estimator="exact", method="loop"),
  "exact_auto": dict(estimator="exact", method="auto"),
  "l11_proj1": dict(norm="l11", estimator="projection", num_projections=1),
  "l11_exact": dict(norm="l11", estimator="exact", method="auto"),
}


def _grads_fn(apply_fn, cfg):
  def loss(params, x, y, key):
    variables = {"params": params}
    logits = apply_fn(variables, x)
    value = jnp.mean(jaxjac.softmax_cross_entropy(logits, y))
    if cfg is not None:
      value = value + 0.5 * LAM * jaxjac.jacobian_penalty(apply_fn, variables, x, key=key, **cfg)
    return value

  return jax.value_and_grad(loss)


def build_step(apply_fn, tx, cfg, *, split: str = "none", mesh=None):
  """``step(params, opt_state, x, y, key) -> (params, opt_state, loss)``, jitted.

  ``split``: ``"none"`` (one device), ``"gspmd"`` (jit with the batch sharded
  over ``mesh``'s data axis), ``"shard_map"`` (explicit per-device step and
  ``pmean`` of loss and gradients).
  """
  grads = local_grads = _grads_fn(apply_fn, cfg)
  if split == "shard_map":

    def local(params, x, y, key):
      key = jax.random.fold_in(key, jax.lax.axis_index("data"))
      value, g = local_grads(params, x, y, key)
      return jax.lax.pmean(value, "data"), jax.lax.pmean(g, "data")

    grads = jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(P(), P("data"), P("data"), P()),
      out_specs=(P(), P()),
      check_vma=False,
    )

  def step(params, opt_state, x, y, key):
    value, g = grads(params, x, y, key)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  if split == "none":
    return jax.jit(step)
  rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  return jax.jit(step, in_shardings=(rep, rep, dat, dat, rep), out_shardings=(rep, rep, rep))


def compile_step(step, args):
  """(compiled, info): trace+lower and compile seconds, XLA memory analysis."""
  t0 = time.perf_counter()
  lowered = step.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  info = {"lower_s": t1 - t0, "compile_s": t2 - t1}
  try:
    m = compiled.memory_analysis()
    info.update(
      temp_bytes=int(m.temp_size_in_bytes),
      argument_bytes=int(m.argument_size_in_bytes),
      output_bytes=int(m.output_size_in_bytes),
      alias_bytes=int(m.alias_size_in_bytes),
    )
    info["peak_bytes"] = (
      info["temp_bytes"] + info["argument_bytes"] + info["output_bytes"] - info["alias_bytes"]
    )
  except Exception as e:  # noqa: BLE001 (some backends have no analysis)
    info["memory_error"] = repr(e)
  return compiled, info


def jax_case(
  model_name, cfg_name, *, batch, image=28, num_classes=10, split="none", mesh=None, timed=True
):
  """A timed case: dict(run=callable, info=...)."""
  model = make_model(model_name, num_classes)
  params = init_params(model, image)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  x, y = make_batch(batch, image, num_classes)
  key = jax.random.key(3)
  args = (params, opt_state, x, y, key)
  if split != "none":
    rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    args = (
      jax.device_put(params, rep),
      jax.device_put(opt_state, rep),
      jax.device_put(x, dat),
      jax.device_put(y, dat),
      jax.device_put(key, rep),
    )
  step = build_step(model.apply, tx, JR_CONFIGS[cfg_name], split=split, mesh=mesh)
  compiled, info = compile_step(step, args)
  info.update(
    impl="jax",
    model=model_name,
    config=cfg_name,
    batch=batch,
    image=image,
    num_classes=num_classes,
    split=split,
  )
  if not timed:
    info["skipped"] = "memory analysis only (not timed)"
    return {"run": None, "info": info, "skip": True}

  def run():
    out = compiled(*args)
    jax.block_until_ready(out)
    return float(out[2])

  return {"run": run, "info": info}


# --------------------------------------------------------------------------- PyTorch


def torch_case(model_name, mode, *, params, batch, image=28, num_classes=10, num_projections=1):
  import torch  # noqa: PLC0415
  import torch_ref  # noqa: PLC0415

  if model_name.startswith("lenet"):
    tm = torch_ref.LeNet(num_classes=num_classes, image_size=image)
  else:
    tm = torch_ref.MLP(num_classes=num_classes, in_features=image * image)
  torch_ref.load_flax_params(tm, params)
  x, y = make_batch(batch, image, num_classes)
  tx_ = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  ty = torch.from_numpy(np.asarray(y).astype(np.int64))
  step = torch_ref.make_train_step(tm, mode=mode, lam=LAM, num_projections=num_projections)
  t0 = time.perf_counter()
  step(tx_, ty)  # warm-up (allocator, autograd graph), reported as its "compile" time
  info = {
    "impl": "torch",
    "model": model_name,
    "config": {"plain": "plain", "exact": "exact_loop"}.get(mode, f"proj{num_projections}"),
    "batch": batch,
    "image": image,
    "num_classes": num_classes,
    "split": f"threads={torch.get_num_threads()}",
    "compile_s": time.perf_counter() - t0,
  }
  return {"run": lambda: float(step(tx_, ty).detach()), "info": info}


# --------------------------------------------------------------------------- timing


def time_interleaved(cases: dict, *, reps: int, min_reps: int, cap_s: float) -> list[dict]:
  """Round-robin timing; returns the cases' info dicts with timing stats."""
  times = {k: [] for k in cases}
  for rnd in range(reps):
    _log(f"    round {rnd}: {sum(map(sum, times.values())):.0f} s timed so far")
    for k, c in cases.items():
      if c.get("skip"):
        continue
      if len(times[k]) >= min_reps and sum(times[k]) > cap_s:
        continue
      t0 = time.perf_counter()
      c["run"]()
      times[k].append(time.perf_counter() - t0)
  rows = []
  for k, c in cases.items():
    info = dict(c["info"], name=k)
    ts = times[k]
    if ts:
      q = np.percentile(ts, [25, 50, 75])
      info.update(
        n=len(ts),
        median_ms=1e3 * float(q[1]),
        q25_ms=1e3 * float(q[0]),
        q75_ms=1e3 * float(q[2]),
        min_ms=1e3 * min(ts),
      )
    rows.append(info)
  return rows


def add_ratios(rows, base_of):
  """ratio = median / median of the row named ``base_of(row)``."""
  by_name = {r["name"]: r for r in rows}
  for r in rows:
    base = by_name.get(base_of(r))
    if base and "median_ms" in base and "median_ms" in r:
      r["ratio_to_plain"] = r["median_ms"] / base["median_ms"]
      if "peak_bytes" in r and "peak_bytes" in base:
        r["mem_ratio_to_plain"] = r["peak_bytes"] / base["peak_bytes"]
  return rows


def _too_big(case, limit_gb):
  peak = case["info"].get("peak_bytes", 0)
  if peak > limit_gb * 2**30:
    case["skip"] = True
    case["info"]["skipped"] = f"XLA peak {peak / 2**30:.1f} GiB > --mem-limit-gb {limit_gb}"
  return case


def _log(*a):
  print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sections


def section_parity(args):
  """PyTorch and jaxjac: same penalty values and gradients on the same weights."""
  import torch  # noqa: PLC0415
  import torch_ref  # noqa: PLC0415

  out = []
  for name in ("lenet", "mlp"):
    model = make_model(name)
    params = init_params(model, 28)
    x, y = make_batch(16, 28, 10)
    variables = {"params": params}
    tm = torch_ref.LeNet() if name == "lenet" else torch_ref.MLP()
    torch_ref.load_flax_params(tm, params)
    tx_ = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    key, n = jax.random.key(7), 3
    # The v that jaxjac's projection estimator draws from `key` (same recipe).
    v = jax.vmap(lambda k: jax.random.normal(k, (16, 10)))(jax.random.split(key, n))
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    logits_j = model.apply(variables, x)
    exact_j = jaxjac.jacobian_penalty(model.apply, variables, x)
    proj_j = jaxjac.jacobian_penalty(
      model.apply, variables, x, key=key, estimator="projection", num_projections=n
    )
    exact_t, logits_t = torch_ref.frobenius_exact(tm, tx_)
    proj_t, _ = torch_ref.frobenius_projection(tm, tx_, torch.from_numpy(np.asarray(v)))
    # Gradient of the JR penalty with respect to the first layer's kernel.
    first = "Conv_0" if name == "lenet" else "Dense_0"
    g_j = jax.grad(lambda p: jaxjac.jacobian_penalty(model.apply, {"params": p}, x))(params)
    g_j = np.asarray(g_j[first]["kernel"])
    tm.zero_grad()
    torch_ref.frobenius_exact(tm, tx_)[0].backward()
    w = tm.conv1.weight if name == "lenet" else tm.hidden[0].weight
    g_t = w.grad.numpy()
    g_t = g_t.transpose(2, 3, 1, 0) if name == "lenet" else g_t.T

    def rel(a, b):
      a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
      return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

    row = {
      "model": name,
      "batch": 16,
      "logits_rel_err": rel(logits_t.detach().numpy(), logits_j),
      "exact_jax": float(exact_j),
      "exact_torch": float(exact_t.detach()),
      "exact_rel_err": rel(float(exact_t), float(exact_j)),
      "proj3_jax": float(proj_j),
      "proj3_torch": float(proj_t.detach()),
      "proj3_rel_err": rel(float(proj_t), float(proj_j)),
      "grad_first_kernel_rel_err": rel(g_t, g_j),
    }
    row["pass"] = all(row[k] < 1e-4 for k in row if k.endswith("rel_err"))
    _log("parity", row)
    out.append(row)
  return out


def section_main(args, batch):
  res = {}
  wanted = args.configs.split(",")
  for name in args.models.split(","):
    cases = {}
    for cfg in [c for c in JR_CONFIGS if c in wanted]:
      _log("compile", name, cfg, batch)
      cases[cfg] = _too_big(jax_case(name, cfg, batch=batch), args.mem_limit_gb)
    if not args.no_torch:
      params = init_params(make_model(name), 28)
      for mode, n in (("plain", 1), ("projection", 1), ("projection", 3), ("exact", 1)):
        label = "torch_" + {"plain": "plain", "exact": "exact_loop"}.get(mode, f"proj{n}")
        if label in wanted:
          c = torch_case(name, mode, params=params, batch=batch, num_projections=n)
          cases[label] = c
    _log("timing", name, list(cases))
    rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
    rows = add_ratios(rows, lambda r: "torch_plain" if r["impl"] == "torch" else "plain")
    by = {r["name"]: r for r in rows}
    for r in rows:  # jaxjac against PyTorch on the same estimator
      twin = {
        "plain": "torch_plain",
        "proj1": "torch_proj1",
        "proj3": "torch_proj3",
        **{f"exact_{m}": "torch_exact_loop" for m in ("auto", "vjp", "loop", "jacrev", "scan")},
      }.get(r["name"])
      if twin in by and "median_ms" in by[twin] and "median_ms" in r:
        r["ratio_to_torch"] = r["median_ms"] / by[twin]["median_ms"]
    res[name] = rows
    for r in rows:
      _log(
        f"  {r['name']:18s} {r.get('median_ms', float('nan')):9.1f} ms  "
        f"x{r.get('ratio_to_plain', float('nan')):.2f}  n={r.get('n')}"
      )
  return res


def section_scaling(args):
  """Against the number of classes C and the input size.

  The MLP is timed; LeNet' (reshape pool) is compiled for its XLA memory
  analysis only (its exact steps at C = 1000 take minutes on this CPU).
  """
  res = {"classes": [], "input": []}
  grid_c = [("mlp", args.batch, True), ("lenet_reshape_pool", args.batch, False)]
  for name, batch, timed in grid_c:
    cases = {}
    for c in (10, 100, 1000):
      for cfg in ("plain", "proj1", "exact_vjp", "exact_scan"):
        _log("compile", name, cfg, "C", c)
        cases[f"C{c}_{cfg}"] = _too_big(
          jax_case(name, cfg, batch=batch, num_classes=c, timed=timed), args.mem_limit_gb
        )
    rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
    rows = add_ratios(rows, lambda r: f"C{r['num_classes']}_plain")
    res["classes"] += rows
  grid_d = [
    ("mlp", args.batch, (28, 56, 112), True),
    ("lenet_reshape_pool", args.batch, (28, 56, 112), False),
  ]
  for name, batch, sides, timed in grid_d:
    cases = {}
    for s in sides:
      for cfg in ("plain", "proj1", "jvp1", "exact_vjp"):
        _log("compile", name, cfg, "image", s)
        cases[f"S{s}_{cfg}"] = _too_big(
          jax_case(name, cfg, batch=batch, image=s, timed=timed), args.mem_limit_gb
        )
    rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
    rows = add_ratios(rows, lambda r: f"S{r['image']}_plain")
    res["input"] += rows
  return res


def section_attacks(args):
  from jaxjac import attacks  # noqa: PLC0415

  model = make_model("lenet")
  variables = {"params": init_params(model, 28)}
  x, y = make_batch(args.batch, 28, 10)
  key = jax.random.key(5)
  runs = {
    "pgd40_linf": lambda: attacks.pgd(
      model.apply, variables, x, y, eps=0.3, norm="linf", steps=40, key=key
    ),
    "apgd100_ce_linf": lambda: attacks.apgd(
      model.apply, variables, x, y, eps=0.3, norm="linf", steps=100, key=key, loss="ce"
    ),
  }
  cases = {}
  for k, fn in runs.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    info = {
      "impl": "jax",
      "model": "lenet",
      "config": k,
      "batch": args.batch,
      "compile_s": time.perf_counter() - t0,
      "split": "none",
    }
    cases[k] = {"run": (lambda fn=fn: jax.block_until_ready(fn())), "info": info}
  plain = jax_case("lenet", "plain", batch=args.batch)
  cases["plain"] = plain
  rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
  rows = add_ratios(rows, lambda r: "plain")
  for r in rows:
    if "median_ms" in r:
      r["examples_per_s"] = args.batch / (r["median_ms"] / 1e3)
  return rows


def section_variants(args):
  """CPU speed work: pooling, device split, conv as patches; PyTorch in the same run."""
  ndev = len(jax.devices())
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",)) if ndev >= 2 else None
  splits = ["none"] + (["gspmd", "shard_map"] if mesh is not None else [])
  res = {}
  plans = {
    "lenet": [("lenet", "none", ("plain", "proj1"))]
    + [
      ("lenet_reshape_pool", s, ("plain", "proj1") + (("exact_vjp",) if s == "none" else ()))
      for s in splits
    ]
    + ([("lenet_patches", "none", ("plain", "proj1"))] if args.with_patches else []),
    "mlp": [
      ("mlp", s, ("plain", "proj1") + (("exact_vjp",) if s == "none" else ())) for s in splits
    ],
  }
  for group, plan in plans.items():
    cases = {}
    for model_name, split, cfgs in plan:
      for cfg in cfgs:
        _log("compile", model_name, split, cfg)
        cases[f"{model_name}|{split}|{cfg}"] = jax_case(
          model_name, cfg, batch=args.batch, split=split, mesh=mesh
        )
    if not args.no_torch:
      params = init_params(make_model(group), 28)
      for mode in ("plain", "projection"):
        c = torch_case(group, mode, params=params, batch=args.batch)
        cases[f"torch|{c['info']['split']}|{c['info']['config']}"] = c
    rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
    # Ratios: to the stock single-device plain step of the group, and per variant.
    stock = f"{group}|none|plain"
    rows = add_ratios(rows, lambda r: stock)
    by = {r["name"]: r for r in rows}
    torch_by = {r["config"]: r for r in rows if r["impl"] == "torch"}
    for r in rows:
      own = by.get(r["name"].rsplit("|", 1)[0] + "|plain")
      if own and "median_ms" in own and "median_ms" in r:
        r["ratio_to_own_plain"] = r["median_ms"] / own["median_ms"]
      tw = torch_by.get(
        {"proj1": "proj1", "plain": "plain", "exact_vjp": "exact_loop"}.get(r["config"], "")
      )
      if r["impl"] == "jax" and tw and "median_ms" in tw and "median_ms" in r:
        r["ratio_to_torch"] = r["median_ms"] / tw["median_ms"]
    res[group] = rows
    for r in rows:
      _log(
        f"  {r['name']:40s} {r.get('median_ms', float('nan')):9.1f} ms  "
        f"torch x{r.get('ratio_to_torch', float('nan')):.2f}"
      )
  return res


def section_pool(args):
  """LeNet' step cost by max-pool implementation, interleaved in one run.

  ``lenet``: the library's pool (reshape, first maximal element by a stop-gradient mask;
  derivatives equal nn.max_pool's, ties included); ``lenet_reshape_pool``: reshape +
  ``jnp.max`` (the earlier pool, wrong at ties); ``lenet_flax_pool``: ``nn.max_pool``
  (``reduce_window``). Ratios to the library pool's step of the same configuration.
  """
  cases = {}
  for model_name in ("lenet", "lenet_reshape_pool", "lenet_flax_pool"):
    for cfg in ("plain", "proj1"):
      _log("compile", model_name, cfg)
      cases[f"{model_name}|{cfg}"] = jax_case(model_name, cfg, batch=args.batch)
  rows = time_interleaved(cases, reps=args.reps, min_reps=args.min_reps, cap_s=args.cap_s)
  by = {r["name"]: r for r in rows}
  for r in rows:
    base = by.get(f"lenet|{r['config']}")
    if base and "median_ms" in base and "median_ms" in r:
      r["ratio_to_library_pool"] = r["median_ms"] / base["median_ms"]
    _log(
      f"  {r['name']:28s} {r.get('median_ms', float('nan')):9.1f} ms  "
      f"x{r.get('ratio_to_library_pool', float('nan')):.2f} of the library pool"
    )
  return rows


XLA_FLAG_SETS = {
  "default": "",
  "onednn": "--xla_cpu_use_onednn=true",
  "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
}


def section_xlaflag(args):
  """(Run in a child process.) LeNet' (reshape pool) plain and proj1 under the current flags."""
  cases = {cfg: jax_case("lenet_reshape_pool", cfg, batch=args.batch) for cfg in ("plain", "proj1")}
  rows = time_interleaved(
    cases, reps=max(args.reps // 2, args.min_reps), min_reps=args.min_reps, cap_s=args.cap_s / 2
  )
  return add_ratios(rows, lambda r: "plain")


def section_xlaflags(args):
  """Fresh processes per flag set, in the order A B C D A B C D (noise shows as spread)."""
  rows = []
  for rnd in range(2):
    for name, flag in XLA_FLAG_SETS.items():
      cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--sections",
        "xlaflag",
        "--host-devices",
        "1",
        "--reps",
        str(args.reps),
        "--min-reps",
        str(args.min_reps),
        "--cap-s",
        str(args.cap_s),
        "--batch",
        str(args.batch),
        f"--xla-extra={flag}",
        "--out",
        "-",
      ]
      _log("xla flags", name, flag)
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if proc.returncode != 0:
        rows.append({"flags": name, "round": rnd, "error": proc.stderr[-2000:]})
        continue
      for r in json.loads(proc.stdout)["xlaflag"]:
        rows.append(dict(r, flags=name, xla_flags=flag, round=rnd))
  return rows


# --------------------------------------------------------------------------- report


def _fmt_ms(r):
  if "median_ms" not in r:
    return r.get("skipped", "not run")
  return f"{r['median_ms']:.1f} [{r['q25_ms']:.0f}-{r['q75_ms']:.0f}] n={r['n']}"


def _fmt(v, spec=".2f"):
  return "" if v is None else format(v, spec)


def _mb(r, key="peak_bytes"):
  return "" if key not in r else f"{r[key] / 2**20:.0f}"


def report(paths):
  runs = [json.load(open(p)) for p in paths]
  lines = []
  for p, run in zip(paths, runs, strict=False):
    m = run["meta"]
    lines += [
      f"## {os.path.basename(p)}",
      "",
      f"Device: {m['device']}; {m['cpu_count']} CPUs; host devices {m['host_devices']}; "
      f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end; "
      f"jax {m['jax']}, torch {m.get('torch')}; total {m['total_s']:.0f} s.",
      "",
    ]
    for row in run.get("parity", []):
      lines.append(
        f"Parity {row['model']} (batch 16): exact JAX {row['exact_jax']:.6g} vs PyTorch "
        f"{row['exact_torch']:.6g} (rel {row['exact_rel_err']:.1e}); projection n=3 same v: "
        f"{row['proj3_jax']:.6g} vs {row['proj3_torch']:.6g} (rel {row['proj3_rel_err']:.1e}); "
        f"penalty gradient (first kernel) rel {row['grad_first_kernel_rel_err']:.1e}; "
        f"logits rel {row['logits_rel_err']:.1e}: {'PASS' if row['pass'] else 'FAIL'}."
      )
    lines.append("")
    for key in [k for k in run if k.startswith("main")]:
      for model, rows in run[key].items():
        lines += [
          f"### {key}: {model}, batch {rows[0]['batch']}",
          "",
          "| step | impl | median ms [IQR] | x plain | x PyTorch | compile s | "
          "XLA peak MB | x plain mem |",
          "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
          lines.append(
            f"| {r['name']} | {r['impl']} | {_fmt_ms(r)} | "
            f"{_fmt(r.get('ratio_to_plain'))} | {_fmt(r.get('ratio_to_torch'))} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {_mb(r)} | "
            f"{_fmt(r.get('mem_ratio_to_plain'))} |"
          )
        lines.append("")
    if "scaling" in run:
      for kind, label in (("classes", "num_classes"), ("input", "image")):
        lines += [
          f"### scaling vs {label}",
          "",
          f"| model | batch | {label} | step | median ms [IQR] | x plain | XLA peak MB |",
          "|---|---|---|---|---|---|---|",
        ]
        for r in run["scaling"][kind]:
          lines.append(
            f"| {r['model']} | {r['batch']} | {r[label]} | {r['config']} | "
            f"{_fmt_ms(r)} | {_fmt(r.get('ratio_to_plain'))} | {_mb(r)} |"
          )
        lines.append("")
    if "attacks" in run:
      lines += [
        "### attacks (LeNet', untrained weights)",
        "",
        "| attack | median ms [IQR] | examples/s | x plain step | compile s |",
        "|---|---|---|---|---|",
      ]
      for r in run["attacks"]:
        lines.append(
          f"| {r['name']} | {_fmt_ms(r)} | {_fmt(r.get('examples_per_s'), '.0f')} | "
          f"{_fmt(r.get('ratio_to_plain'))} | {_fmt(r.get('compile_s'), '.1f')} |"
        )
      lines.append("")
    if "variants" in run:
      for group, rows in run["variants"].items():
        lines += [
          f"### CPU variants: {group}, batch {rows[0]['batch']}",
          "",
          "| model | split | step | median ms [IQR] | x stock plain | x own plain | "
          "x PyTorch | compile s |",
          "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
          model, split, _ = r["name"].split("|")
          lines.append(
            f"| {model} | {split} | {r['config']} | {_fmt_ms(r)} | "
            f"{_fmt(r.get('ratio_to_plain'))} | {_fmt(r.get('ratio_to_own_plain'))} | "
            f"{_fmt(r.get('ratio_to_torch'))} | {_fmt(r.get('compile_s'), '.1f')} |"
          )
        lines.append("")
    if "xlaflags" in run:
      lines += [
        "### XLA flags (LeNet' reshape pool, fresh process each, 2 rounds)",
        "",
        "| flags | round | step | median ms [IQR] | x plain |",
        "|---|---|---|---|---|",
      ]
      for r in run["xlaflags"]:
        if "error" in r:
          lines.append(f"| {r['flags']} | {r['round']} | error | | |")
          continue
        lines.append(
          f"| {r['flags']} | {r['round']} | {r['name']} | {_fmt_ms(r)} | "
          f"{_fmt(r.get('ratio_to_plain'))} |"
        )
      lines.append("")
  out_dir = os.path.dirname(os.path.abspath(paths[0]))
  with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  _plots(runs, paths, out_dir)
  print("\n".join(lines))


def _plots(runs, paths, out_dir):
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  styles = ["-o", "--s"]
  for run_i, (run, p) in enumerate(zip(runs, paths, strict=False)):
    if "scaling" not in run:
      continue
    for col, model in enumerate(("mlp", "lenet_reshape_pool")):
      rows = [r for r in run["scaling"]["classes"] if r["model"] == model]
      for cfg in ("proj1", "jvp1", "exact_vjp", "exact_scan"):
        pts = sorted(
          (r["num_classes"], r.get("ratio_to_plain"), r.get("peak_bytes"))
          for r in rows
          if r["config"] == cfg
        )
        xs = [c for c, t, _ in pts if t is not None]
        axes[0, col].plot(
          xs,
          [t for _, t, _ in pts if t is not None],
          styles[run_i % 2],
          label=f"{cfg} ({os.path.basename(p)})",
        )
        axes[1, col].plot(
          [c for c, _, m in pts if m],
          [m / 2**20 for _, _, m in pts if m],
          styles[run_i % 2],
          label=f"{cfg} ({os.path.basename(p)})",
        )
      b = rows[0]["batch"] if rows else "?"
      axes[0, col].set_title(f"{model}, batch {b}: step time / plain step")
      axes[1, col].set_title(f"{model}, batch {b}: XLA peak memory (MiB)")
  for ax in axes.flat:
    if not any(len(line.get_xdata()) for line in ax.lines):  # e.g. LeNet' is not timed
      ax.text(0.5, 0.5, "not timed (memory only)", ha="center", transform=ax.transAxes)
      continue
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of classes C")
    ax.grid(True, which="both", alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "scaling_classes.png"), dpi=110)

  fig, ax = plt.subplots(figsize=(9, 4.5))
  run = runs[0]
  for i, (run, p) in enumerate(zip(runs, paths, strict=False)):
    if "main" not in run:
      continue
    rows = [r for r in run["main"]["lenet"] if "ratio_to_plain" in r]
    xs = np.arange(len(rows)) + 0.4 * i
    ax.bar(xs, [r["ratio_to_plain"] for r in rows], width=0.4, label=os.path.basename(p))
    ax.set_xticks(np.arange(len(rows)) + 0.2, [r["name"] for r in rows], rotation=45, ha="right")
  ax.axhline(1.6, color="k", ls=":", label="target proj1 1.6x")
  ax.axhline(6.0, color="r", ls=":", label="target exact 6x")
  ax.set_yscale("log")
  ax.set_ylabel("step time / plain step")
  ax.set_title("LeNet', batch 128, CPU (jaxjac.models.LeNet)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "main_lenet.png"), dpi=110)


# --------------------------------------------------------------------------- main


def main(args):
  if args.report:
    report(args.report)
    return
  sys.path.insert(0, HERE)
  t_start = time.perf_counter()
  meta = {
    "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
    + (
      f" ({platform.processor() or platform.machine()})" if jax.default_backend() == "cpu" else ""
    ),
    "host_devices": len(jax.devices()),
    "cpu_count": os.cpu_count(),
    "loadavg_start": [round(v, 2) for v in os.getloadavg()],
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "lambda": LAM,
  }
  if not args.no_torch and args.sections != "xlaflag":
    try:
      import torch  # noqa: PLC0415

      meta["torch"] = torch.__version__
      meta["torch_threads"] = torch.get_num_threads()
    except ImportError:
      args.no_torch = True
  result = {"meta": meta}
  sections = args.sections.split(",")
  plan = [
    ("parity", lambda: section_parity(args), not args.no_torch),
    ("main", lambda: section_main(args, args.batch), True),
    (
      f"main_b{args.batch_large}",
      lambda: section_main(args, args.batch_large),
      bool(args.batch_large) and "main" in sections,
    ),
    ("variants", lambda: section_variants(args), True),
    ("pool", lambda: section_pool(args), True),
    ("attacks", lambda: section_attacks(args), True),
    ("scaling", lambda: section_scaling(args), True),
    ("xlaflag", lambda: section_xlaflag(args), True),
    ("xlaflags", lambda: section_xlaflags(args), True),
  ]
  for name, fn, enabled in plan:
    if not enabled or (name not in sections and not name.startswith("main_b")):
      continue
    t0 = time.perf_counter()
    try:
      result[name] = fn()
    except Exception:  # noqa: BLE001 (record and go on with the other sections)
      result[name + "_error"] = traceback.format_exc()
      _log(result[name + "_error"])
    meta[f"{name}_s"] = time.perf_counter() - t0
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    meta["total_s"] = time.perf_counter() - t_start
    if args.out != "-":  # written after every section: a late failure keeps the rest
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
  if args.out == "-":
    print(json.dumps(result))
    return
  _log("wrote", args.out, f"{meta['total_s']:.0f} s")


if __name__ == "__main__":
  main(ARGS)
