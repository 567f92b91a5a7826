"""FAB-T: the targeted fast adaptive boundary attack, for l_inf and l_2.

FAB (Croce and Hein 2020) looks for the adversarial example of smallest norm.
At the current iterate ``x1`` it linearizes the difference of logits between a
target class ``t`` and the true class ``y``,

.. math::
  f(z) \\approx f(x_1) + \\langle \\nabla f(x_1), z - x_1 \\rangle,
  \\qquad f(z) = z_t - z_y,

and projects both ``x1`` and the original point ``x0`` onto the hyperplane
``{f = 0}`` intersected with the box ``[l, u]``: ``d1 = P(x1) - x1``,
``d2 = P(x0) - x0``. The next iterate is the biased extrapolation

.. math::
  x_1 \\leftarrow \\mathrm{clip}_{[l, u]}\\big((1 - \\alpha)(x_1 + \\eta d_1)
    + \\alpha (x_0 + \\eta d_2)\\big), \\qquad
  \\alpha = \\min\\Big(\\frac{\\|d_1\\|_p}{\\|d_1\\|_p + \\|d_2\\|_p},
    \\alpha_{max}\\Big),

with ``alpha_max = 0.1`` and overshoot ``eta = 1.05``. When ``x1`` is
misclassified it is recorded if its distance to ``x0`` is the smallest so far,
and pulled back towards ``x0``: ``x1 <- x0 + beta (x1 - x0)``, ``beta = 0.9``.

**Projection on a hyperplane and a box.** For a point ``p`` in the box and
``c = f(p)`` (after flipping the sign of ``w`` so that ``c >= 0``) the minimal
``||d||_p`` with ``c + <w, d> = 0`` and ``p + d`` in the box is
``d_i = -sign(w_i) min(r s_i, rho_i)`` with ``rho_i`` the room to the box
face ``p_i`` moves towards, ``s_i = 1`` for l_inf and ``s_i = |w_i|`` for
l_2 (the KKT point ``clip(-lambda w)``), and ``r`` the root of the piecewise
linear, nondecreasing

.. math::
  h(r) = \\sum_i |w_i| \\min(r s_i, \\rho_i) = c.

It is found by bisection on ``log r`` (36 halvings of a bracket
``[r_max e^-40, r_max]``, ``r_max = max_i rho_i / s_i``) followed by the exact
affine solve on the final bracket; unlike the reference code it sorts nothing
(sorting is slow on CPU). When ``h(inf) < c`` the hyperplane does not meet the
box and ``d`` goes to the box corner that comes closest to it (as in the
reference).

**FAB-T** (the version of AutoAttack's standard suite) runs one attack per
target class, the ``num_targets`` classes with the largest clean logits
other than ``y``, each with ``restarts`` runs: the first starts at ``x0``, the
others at a random point at distance ``eps / 2`` (run ``j`` draws it from
``jax.random.fold_in(key, j)``). Across all runs an example keeps its
adversarial point of smallest norm; it is returned if that norm is at most
``eps``, else ``x`` is returned. Examples that are misclassified at ``x``
are returned unchanged.

References:
  Croce, Hein. Minimally distorted adversarial examples with a fast adaptive
  boundary attack. arXiv:1907.02044, 2020.
  Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble
  of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxjac._src import checks
from jaxjac._src.attacks import core, validation
from jaxjac._src.attacks.norms import NORMS

ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9

_BISECTIONS = 36  # on log r: a relative bracket of 40 / 2^36 ~ 6e-10


# ----------------------------------------------------------------------------
# Validation shared with the Square attack.


def check_inputs(apply_fn, params, x, y, *, eps, norm, bounds) -> tuple[int, tuple[float, float]]:
  """Validates the arguments FAB-T and Square share; returns ``(num_classes, bounds)``.

  The checks are the attacks' own (:mod:`jaxjac._src.attacks.validation`), with a finite
  box (both attacks sample inside it).
  """
  validation.check_apply_fn(apply_fn)
  checks.check_choice(norm, "norm", NORMS)
  bounds = validation.check_bounds(bounds)
  if not all(math.isfinite(b) for b in bounds):
    raise ValueError(f"`bounds` must be finite with low < high, got {bounds!r}.")
  validation.check_scalar(eps, "eps")
  classes = validation.check_inputs(apply_fn, params, x, y, bounds=bounds)
  if classes < 2:
    raise ValueError(f"`apply_fn` must return logits of shape (B, C) with C >= 2, got C={classes}.")
  return classes, bounds


# ----------------------------------------------------------------------------
# Norms and the projection on a hyperplane intersected with the box.


def _norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example norm of ``v`` of shape ``(B, ...)``."""
  flat = v.reshape(v.shape[0], -1)
  if norm == "linf":
    return jnp.max(jnp.abs(flat), axis=1)
  return jnp.sqrt(jnp.sum(jnp.square(flat), axis=1))


def project_hyperplane_box(
  p: jax.Array, w: jax.Array, c: jax.Array, *, norm: str, bounds: tuple[float, float]
) -> jax.Array:
  """Minimal-norm step onto ``{z : c + <w, z - p> = 0}`` inside the box.

  Args:
    p: points ``(B, n)`` inside ``bounds``.
    w: normals ``(B, n)``.
    c: values ``(B,)`` of the affine function at ``p``.
    norm: ``"linf"`` or ``"l2"``.
    bounds: the box ``(low, high)``.

  Returns:
    ``d`` of shape ``(B, n)``: ``argmin ||d||_p`` subject to ``c + <w, d> = 0``
    and ``p + d`` in the box; where the hyperplane misses the box, the step to
    the box corner that minimizes ``|c + <w, d>|``.
  """
  lo, hi = bounds
  sgn = jnp.where(c >= 0, 1.0, -1.0).astype(p.dtype)
  w = w * sgn[:, None]
  c = c * sgn  # now c >= 0 and <w, d> = -c is needed
  aw = jnp.abs(w)
  active = aw > 0
  room = jnp.maximum(jnp.where(w > 0, p - lo, hi - p), 0.0)
  speed = aw if norm == "l2" else jnp.ones_like(aw)
  bp = jnp.where(active, room / jnp.where(active, speed, 1.0), 0.0)  # r at which i saturates

  def h(r):  # decrease of the affine function at step size r
    return jnp.sum(jnp.where(active, aw * jnp.minimum(r[:, None] * speed, room), 0.0), axis=1)

  r_max = jnp.max(bp, axis=1)
  feasible = (h(r_max) >= c) & (r_max > 0)
  # Bisection on log r over [r_max e^-40, r_max] brackets the root to a relative
  # width of 40 / 2^36; on the bracket [rl, ru] the coordinates with bp <= rl are
  # saturated and h is affine, h(r) = A + r B, unless a breakpoint lies inside.
  log_hi = jnp.log(jnp.maximum(r_max, 1e-30))

  def bisect(_, bracket):
    tl, tu = bracket
    tm = 0.5 * (tl + tu)
    below = h(jnp.exp(tm)) < c
    return jnp.where(below, tm, tl), jnp.where(below, tu, tm)

  tl, tu = lax.fori_loop(0, _BISECTIONS, bisect, (log_hi - 40.0, log_hi))
  rl, ru = jnp.exp(tl), jnp.exp(tu)
  sat = active & (bp <= rl[:, None])
  a_sat = jnp.sum(jnp.where(sat, aw * room, 0.0), axis=1)
  b_free = jnp.sum(jnp.where(active & ~sat, aw * speed, 0.0), axis=1)
  r = jnp.clip((c - a_sat) / jnp.maximum(b_free, 1e-30), rl, ru)
  r = jnp.where(h(rl) >= c, rl * c / jnp.maximum(h(rl), 1e-30), r)  # root below the bracket
  r = jnp.where(c > 0, r, 0.0)
  move = jnp.where(feasible[:, None], jnp.minimum(r[:, None] * speed, room), room)
  return jnp.where(active, -jnp.sign(w) * move, 0.0)


# ----------------------------------------------------------------------------
# The attack.


def _targets(logits: jax.Array, y: jax.Array, num_targets: int) -> jax.Array:
  """``(num_targets, B)``: the classes other than ``y`` by decreasing logit."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  order = jnp.argsort(-jnp.where(mask, -jnp.inf, logits), axis=-1, stable=True)
  return order[:, :num_targets].T


def _random_start(key, x0, eps, norm, bounds):
  if norm == "linf":
    t = jax.random.uniform(key, x0.shape, x0.dtype, minval=-1.0, maxval=1.0)
  else:
    t = jax.random.normal(key, x0.shape, x0.dtype)
  scale = 0.5 * eps / jnp.maximum(_norm(t, norm), 1e-12)
  return jnp.clip(x0 + t * scale.reshape((-1,) + (1,) * (x0.ndim - 1)), *bounds)


def _diff(apply_fn, params, xa, y, t):
  """``z_t - z_y`` per example."""
  z = apply_fn(params, xa)
  zt = jnp.take_along_axis(z, t[:, None], axis=-1)[:, 0]
  zy = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  return zt - zy


def _setup(apply_fn, params, x, y, num_targets):
  """``(clean_ok (B,), targets (num_targets, B))``."""
  logits0 = apply_fn(params, x)
  return jnp.argmax(logits0, axis=-1) == y, _targets(logits0, y, num_targets)


def _run_start(x, eps, key, j, *, restarts, norm, bounds):
  """Run ``j``'s first iterate: ``x`` for the first run of a target, else a random start."""
  start = _random_start(jax.random.fold_in(key, j), x, eps, norm, bounds)
  return jnp.where(j % restarts > 0, start, x)


def _step(apply_fn, params, x, y, t, carry, *, norm, bounds):
  """One FAB iteration towards target ``t``: ``(x1, best_x, best_n)`` updated."""
  x1, best_x, best_n = carry
  batch = x.shape[0]
  bshape = (batch,) + (1,) * (x.ndim - 1)
  x0f = x.reshape(batch, -1)
  df, vjp = jax.vjp(lambda xa: _diff(apply_fn, params, xa, y, t), x1)
  (dg,) = vjp(jnp.ones_like(df))
  w = dg.reshape(batch, -1)
  x1f = x1.reshape(batch, -1)
  c0 = df + jnp.sum(w * (x0f - x1f), axis=1)  # linearized f at x0
  d = project_hyperplane_box(
    jnp.concatenate([x1f, x0f]),
    jnp.concatenate([w, w]),
    jnp.concatenate([df, c0]),
    norm=norm,
    bounds=bounds,
  )
  a = jnp.maximum(_norm(d, norm), 1e-8)
  a1, a2 = a[:batch], a[batch:]
  alpha = jnp.clip(a1 / (a1 + a2), 0.0, ALPHA_MAX).reshape(bshape)
  d1 = d[:batch].reshape(x.shape)
  d2 = d[batch:].reshape(x.shape)
  x1 = jnp.clip((x1 + ETA * d1) * (1 - alpha) + (x + ETA * d2) * alpha, *bounds)
  adv = jnp.argmax(apply_fn(params, x1), axis=-1) != y
  n1 = _norm(x1 - x, norm)
  better = adv & (n1 < best_n)
  best_x = jnp.where(better.reshape(bshape), x1, best_x)
  best_n = jnp.where(better, n1, best_n)
  x1 = jnp.where(adv.reshape(bshape), x + (x1 - x) * BETA, x1)
  return x1, best_x, best_n


def _output(x, eps, clean_ok, best_x, best_n):
  found = clean_ok & (best_n <= eps)
  bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
  return lax.stop_gradient(jnp.where(found.reshape(bshape), best_x, x))


@functools.partial(
  jax.jit, static_argnames=("apply_fn", "norm", "steps", "restarts", "num_targets", "bounds")
)
def _fab(apply_fn, params, x, y, eps, key, *, norm, steps, restarts, num_targets, bounds):
  clean_ok, all_targets = _setup(apply_fn, params, x, y, num_targets)
  step = functools.partial(_step, apply_fn, params, x, y, norm=norm, bounds=bounds)

  def one_run(j, best):
    t = all_targets[j // restarts]
    x1 = _run_start(x, eps, key, j, restarts=restarts, norm=norm, bounds=bounds)
    _, best_x, best_n = lax.fori_loop(0, steps, lambda _, c: step(t, c), (x1, *best))
    return best_x, best_n

  best = (x, jnp.full((x.shape[0],), jnp.inf, x.dtype))
  best_x, best_n = lax.fori_loop(0, num_targets * restarts, one_run, best)
  return _output(x, eps, clean_ok, best_x, best_n)


_host_setup = jax.jit(_setup, static_argnames=("apply_fn", "num_targets"))
_host_run_start = jax.jit(_run_start, static_argnames=("restarts", "norm", "bounds"))
_host_step = jax.jit(_step, static_argnames=("apply_fn", "norm", "bounds"))
_host_output = jax.jit(_output)


def _fab_on_host(apply_fn, params, x, y, eps, key, *, norm, steps, restarts, num_targets, bounds):
  """:func:`_fab` with its loops in Python (see ``core.on_host_cpu``): the same iterations."""
  clean_ok, all_targets = _host_setup(apply_fn, params, x, y, num_targets)
  best_x, best_n = x, jnp.full((x.shape[0],), jnp.inf, x.dtype)
  for j in range(num_targets * restarts):
    x1 = _host_run_start(x, eps, key, j, restarts=restarts, norm=norm, bounds=bounds)
    t = all_targets[j // restarts]  # once per run, not per step
    carry = (x1, best_x, best_n)
    for _ in range(steps):
      carry = _host_step(apply_fn, params, x, y, t, carry, norm=norm, bounds=bounds)
    _, best_x, best_n = carry
  return _host_output(x, eps, clean_ok, best_x, best_n)


def fab(
  apply_fn,
  params: Any,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  key: jax.Array,
  steps: int = 100,
  restarts: int = 1,
  num_targets: int = 9,
  bounds: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """FAB-T: targeted minimum-norm attack over the top ``num_targets`` classes.

  For each target class ``t`` (the ``num_targets`` largest clean logits other
  than ``y``) and each restart, ``steps`` iterations of

  .. math::
    x_1 \\leftarrow \\mathrm{clip}_{[l, u]}\\big((1 - \\alpha)(x_1 + \\eta d_1)
      + \\alpha (x_0 + \\eta d_2)\\big),

  with ``d1``, ``d2`` the minimal ``l_p`` steps from ``x1`` and ``x0`` to the
  linearized boundary ``z_t = z_y`` inside the box; see the module docstring.
  Each iteration costs one forward-backward pass and one forward pass.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``, integers in ``[0, C)``.
    eps: radius, finite and >= 0: a point is returned only if its distance
      to ``x`` is at most ``eps``.
    norm: ``"linf"`` or ``"l2"``.
    key: PRNG key (``jax.random.key``; a raw ``jax.random.PRNGKey`` works too) for
      the random starts of restarts ``1, ..., restarts - 1``.
    steps: iterations per run, >= 1.
    restarts: runs per target class, >= 1 (the first from ``x``).
    num_targets: target classes, in ``[1, C - 1]``.
    bounds: the box ``(low, high)``, finite.

  Returns:
    ``x_adv`` with ``x``'s shape: per example, the misclassified point of
    smallest ``l_p`` distance to ``x`` found, if that distance is at most
    ``eps``; else ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac.attacks import fab
    >>> w = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    >>> apply_fn = lambda p, x: x @ p
    >>> x = jnp.array([[0.6, 0.4]]); y = jnp.array([0])
    >>> x_adv = fab(apply_fn, w, x, y, eps=0.5, norm="l2", key=jax.random.key(0),
    ...             steps=20, num_targets=1)
    >>> int(jnp.argmax(x_adv @ w)), round(float(jnp.linalg.norm(x_adv - x)), 2)
    (1, 0.14)

  References:
    Croce, Hein. Minimally distorted adversarial examples with a fast
    adaptive boundary attack. arXiv:1907.02044, 2020.
  """
  num_classes, bounds = check_inputs(apply_fn, params, x, y, eps=eps, norm=norm, bounds=bounds)
  validation.check_key(key, needed_by="the attack's random draws")
  steps = checks.check_positive_int(steps, "steps")
  restarts = checks.check_positive_int(restarts, "restarts")
  num_targets = checks.check_positive_int(num_targets, "num_targets")
  if num_targets > num_classes - 1:
    raise ValueError(
      f"`num_targets` must be at most C - 1 = {num_classes - 1} for {num_classes} classes, "
      f"got {num_targets}."
    )
  run = _fab_on_host if core.on_host_cpu(params, x, y, key) else _fab
  return run(
    apply_fn,
    params,
    x,
    y,
    jnp.asarray(eps, x.dtype),
    key,
    norm=norm,
    steps=steps,
    restarts=restarts,
    num_targets=num_targets,
    bounds=bounds,
  )
