"""The jitted core of every attack: one compiled function per static configuration.

On CPU with concrete arrays PGD and APGD run the same iterations from Python,
one compiled iteration per call (see :func:`on_host_cpu`).

**Which point is returned.** Every evaluated iterate (and every restart) is a
candidate. With ``select="success"`` an example keeps the first candidate that
succeeds (misclassified; with a ``target``: classified as the target), else
the candidate with the highest loss. With ``select="loss"`` it keeps the
highest-loss candidate. Restart ``r`` draws its random start from
``jax.random.fold_in(key, r)``, so ``restarts=R`` contains the run of
``restarts=1`` with the same key and is never weaker than it.

**Projection.** After each step the iterate is projected on the ball and
then clipped to the box; for a point ``x`` in the box, clipping only shrinks
every ``|delta_i|``, so the result stays in the ball.

**Invalid values under a trace.** Values cannot be checked while traced
(inside ``jax.jit``) unless the caller asks for ``checkify`` checks; without
them an example whose ``x`` is not finite, whose label (or target) is out of
range, or any example when ``eps`` is negative or NaN, comes back as NaN
instead of as a plausible but wrong point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxjac._src.attacks import losses as losses_lib
from jaxjac._src.attacks.norms import RULES, NormRules, per_example

METHODS = ("fgsm", "pgd", "apgd")
SELECTS = ("success", "loss")


class AttackConfig(NamedTuple):
  """Static (hashable) configuration of one attack; one compilation per value.

  Attributes:
    method: ``"fgsm"``, ``"pgd"`` or ``"apgd"``.
    norm: ``"linf"`` or ``"l2"``.
    steps: gradient steps per restart (1 for FGSM).
    restarts: independent runs; the best per example is kept.
    loss: ``"ce"``, ``"margin"``, ``"dlr"`` or ``"pair"``.
    targeted: whether a ``target`` is given.
    random_start: start from a random point in the ball.
    select: ``"success"`` or ``"loss"``: which candidate an example keeps.
    bounds: the box ``(low, high)`` as Python floats (may be infinite).
    misclassify: a targeted attack succeeds on any misclassification (as in
      APGD-T), not only on reaching the target.
  """

  method: str
  norm: str
  steps: int
  restarts: int
  loss: str
  targeted: bool
  random_start: bool
  select: str
  bounds: tuple[float, float]
  misclassify: bool = False


class Best(NamedTuple):
  """The candidate kept per example."""

  x: jax.Array
  loss: jax.Array
  success: jax.Array


def improve(best: Best, x: jax.Array, loss: jax.Array, success: jax.Array, select: str) -> Best:
  """Keeps, per example, the better of ``best`` and the candidate ``x``."""
  if select == "loss":
    take = loss > best.loss
  else:  # First success wins; among failures, the highest loss.
    take = (success & ~best.success) | (~best.success & ~success & (loss > best.loss))
  return Best(
    jnp.where(per_example(take, x), x, best.x),
    jnp.where(take, loss, best.loss),
    jnp.where(take, success, best.success),
  )


def init_best(x: jax.Array) -> Best:
  b = x.shape[0]
  return Best(x, jnp.full((b,), -jnp.inf, x.dtype), jnp.zeros((b,), bool))


class Problem(NamedTuple):
  """The closed-over pieces of one attack call (not a pytree; used in tracing)."""

  cfg: AttackConfig
  rules: NormRules
  value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]
  value: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  project: Callable[[jax.Array], jax.Array]


def make_problem(apply_fn, cfg: AttackConfig, params, x, y, target, eps) -> Problem:
  rules = RULES[cfg.norm]
  loss_fn = losses_lib.LOSS_FNS[cfg.loss]
  lo, hi = cfg.bounds
  success_targeted = cfg.targeted and not cfg.misclassify

  def value(xa):
    logits = apply_fn(params, xa)
    losses = loss_fn(logits, y, target, cfg.targeted)
    return losses, losses_lib.success(logits, y, target, success_targeted)

  def total(xa):
    losses, succeeded = value(xa)
    return jnp.sum(losses), (losses, succeeded)

  def value_and_grad(xa):
    (_, (losses, succeeded)), g = jax.value_and_grad(total, has_aux=True)(xa)
    return losses, succeeded, g

  def project(xa):
    return jnp.clip(x + rules.project(xa - x, eps), lo, hi)

  return Problem(cfg, rules, value_and_grad, value, project)


def _fgsm_run(prob: Problem, x, eps, step_size, key) -> Best:
  del step_size, key
  _, _, g = prob.value_and_grad(x)
  x_adv = prob.project(x + eps * prob.rules.ascent(g))
  losses, succeeded = prob.value(x_adv)
  return Best(x_adv, losses, succeeded)


def _pgd_start(prob: Problem, x, eps, key):
  x0 = prob.project(x + prob.rules.uniform(key, x, eps)) if prob.cfg.random_start else x
  return x0, init_best(x)


def _pgd_step(prob: Problem, x, eps, step_size, carry, i):
  del x, eps, i
  xa, best = carry
  losses, succeeded, g = prob.value_and_grad(xa)
  best = improve(best, xa, losses, succeeded, prob.cfg.select)
  return prob.project(xa + step_size * prob.rules.ascent(g)), best


def _pgd_finish(prob: Problem, carry) -> Best:
  xa, best = carry
  losses, succeeded = prob.value(xa)
  return improve(best, xa, losses, succeeded, prob.cfg.select)


def _pgd_run(prob: Problem, x, eps, step_size, key) -> Best:
  def body(i, carry):
    return _pgd_step(prob, x, eps, step_size, carry, i)

  carry = lax.fori_loop(0, prob.cfg.steps, body, _pgd_start(prob, x, eps, key))
  return _pgd_finish(prob, carry)


class _APGDState(NamedTuple):
  x: jax.Array  # current iterate x^(k)
  x_old: jax.Array  # previous iterate x^(k-1)
  g: jax.Array  # gradient at x
  step: jax.Array  # (B,) step size eta
  x_max: jax.Array  # highest-loss point so far
  g_max: jax.Array
  loss_max: jax.Array
  loss_prev: jax.Array  # loss at the previous iterate
  num_increase: jax.Array  # (B,) loss increases since the last checkpoint
  since_check: jax.Array  # scalar: iterations since the last checkpoint
  interval: jax.Array  # scalar: current checkpoint interval w_j - w_{j-1}
  loss_max_at_check: jax.Array
  reduced_at_check: jax.Array  # (B,) bool: step halved at the last checkpoint
  best: Best  # the returned candidate (see `select`)


def _apgd_scan(prob: Problem, x, eps, key, *, trace: bool):
  """One run of APGD (Croce and Hein 2020, Algorithm 1); optionally its trace.

  The schedule follows the reference code: the checkpoint interval starts at
  ``max(int(0.22 N), 1)`` and shrinks by ``max(int(0.03 N), 1)`` per checkpoint
  down to ``max(int(0.06 N), 1)``; at a checkpoint the step size of an example
  is halved and it restarts from its best point when the loss increased in at
  most a fraction ``rho = 0.75`` of the interval's steps, or when the step was
  not halved at the previous checkpoint and the best loss has not improved
  since.

  One deliberate difference from the reference code, at the first checkpoint
  only: condition (1) counts ``f(x^(i+1)) > f(x^(i))`` for ``i = 0 .. w_1 - 1``,
  i.e. it compares the first iterate with the starting point ``x^(0)``, as
  Algorithm 1 of the paper does (the sum starts at ``w_0 = 0``). The
  reference code compares it instead with an unfilled slot of its loss
  buffer (index ``-1`` of a zero-initialized array wraps to the last row), so
  its count depends on the sign of the loss (always counted for the positive
  cross-entropy, never for the DLR loss of a correctly classified point),
  which is an indexing artifact, not a rule. Every later checkpoint is the
  same in both. The tests match this function to a float64 NumPy port of the
  reference with this one change, to ~1e-12.
  """
  final, ys = lax.scan(
    lambda s, i: _apgd_step(prob, x, eps, s, i, trace=trace),
    _apgd_start(prob, x, eps, key),
    jnp.arange(prob.cfg.steps),
  )
  return final, ys


def _apgd_start(prob: Problem, x, eps, key) -> _APGDState:
  """The state before APGD's first iteration: the random start and its gradient."""
  cfg, rules = prob.cfg, prob.rules
  b = x.shape[0]
  x0 = prob.project(x + rules.boundary(key, x, eps)) if cfg.random_start else x
  loss0, success0, g0 = prob.value_and_grad(x0)
  return _APGDState(
    x=x0,
    x_old=x0,
    g=g0,
    step=jnp.full((b,), 2.0, x.dtype) * eps,
    x_max=x0,
    g_max=g0,
    loss_max=loss0,
    loss_prev=loss0,
    num_increase=jnp.zeros((b,), jnp.int32),
    since_check=jnp.zeros((), jnp.int32),
    interval=jnp.asarray(max(int(0.22 * cfg.steps), 1), jnp.int32),
    loss_max_at_check=loss0,
    reduced_at_check=jnp.ones((b,), bool),
    best=improve(init_best(x), x0, loss0, success0, cfg.select),
  )


def _apgd_step(prob: Problem, x, eps, s: _APGDState, i, *, trace: bool = False):
  """APGD's iteration ``i`` (0-based): the new state and, with ``trace``, its record."""
  del eps
  cfg, rules = prob.cfg, prob.rules
  n = cfg.steps
  min_interval = max(int(0.06 * n), 1)
  decrement = max(int(0.03 * n), 1)
  rho, alpha = 0.75, 0.75
  a = jnp.where(i > 0, alpha, 1.0).astype(x.dtype)
  z = prob.project(s.x + per_example(s.step, x) * rules.ascent(s.g))
  x_new = prob.project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_old))
  losses, succeeded, g = prob.value_and_grad(x_new)
  best = improve(s.best, x_new, losses, succeeded, cfg.select)

  improved = losses > s.loss_max
  x_max = jnp.where(per_example(improved, x), x_new, s.x_max)
  g_max = jnp.where(per_example(improved, x), g, s.g_max)
  loss_max = jnp.where(improved, losses, s.loss_max)
  num_increase = s.num_increase + (losses > s.loss_prev).astype(jnp.int32)
  since_check = s.since_check + 1

  check = since_check == s.interval
  oscillating = num_increase.astype(x.dtype) <= rho * s.interval.astype(x.dtype)
  stalled = ~s.reduced_at_check & (s.loss_max_at_check >= loss_max)
  halve = oscillating | stalled
  reduce = check & halve
  reduce_x = per_example(reduce, x)
  new = _APGDState(
    x=jnp.where(reduce_x, x_max, x_new),
    x_old=s.x,
    g=jnp.where(reduce_x, g_max, g),
    step=jnp.where(reduce, s.step / 2, s.step),
    x_max=x_max,
    g_max=g_max,
    loss_max=loss_max,
    loss_prev=losses,
    num_increase=jnp.where(check, 0, num_increase),
    since_check=jnp.where(check, 0, since_check),
    interval=jnp.where(check, jnp.maximum(s.interval - decrement, min_interval), s.interval),
    loss_max_at_check=jnp.where(check, loss_max, s.loss_max_at_check),
    reduced_at_check=jnp.where(check, halve, s.reduced_at_check),
    best=best,
  )
  return new, ((x_new, losses, s.step) if trace else None)


def _apgd_run(prob: Problem, x, eps, step_size, key) -> Best:
  del step_size
  return _apgd_scan(prob, x, eps, key, trace=False)[0].best


_RUNS = {"fgsm": _fgsm_run, "pgd": _pgd_run, "apgd": _apgd_run}


def _invalid(x, y, target, eps, num_classes: int) -> jax.Array:
  """``(B,)``: examples whose values no trace-time check could see are invalid."""
  bad = ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
  for labels in (y, target):
    bad |= (labels < 0) | (labels >= num_classes)
  return bad | ~(eps >= 0)


def _output(apply_fn, config: AttackConfig, params, x, y, target, eps, best_x):
  num_classes = jax.eval_shape(apply_fn, params, x).shape[-1]
  bad = per_example(_invalid(x, y, target, eps, num_classes), x)
  return lax.stop_gradient(jnp.where(bad, jnp.nan, best_x))


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def _attack_compiled(apply_fn, config: AttackConfig, params, x, y, target, eps, step_size, key):
  """The whole attack, restarts included, as one compiled function."""
  prob = make_problem(apply_fn, config, params, x, y, target, eps)
  run = functools.partial(_RUNS[config.method], prob, x, eps, step_size)
  if config.restarts == 1:
    best = run(jax.random.fold_in(key, 0))
  else:

    def restart(r, best):
      new = run(jax.random.fold_in(key, r))
      return improve(best, new.x, new.loss, new.success, config.select)

    # From the empty candidate, restart 0 is always taken; the run is traced once.
    best = lax.fori_loop(0, config.restarts, restart, init_best(x))
  return _output(apply_fn, config, params, x, y, target, eps, best.x)


# ----------------------------------------------------------------------------
# The same attack iterated on the host, one compiled iteration at a time.

_START = {"pgd": _pgd_start, "apgd": _apgd_start}


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def _host_start(apply_fn, config: AttackConfig, params, x, y, target, eps, key):
  prob = make_problem(apply_fn, config, params, x, y, target, eps)
  return _START[config.method](prob, x, eps, key)


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def _host_step(apply_fn, config: AttackConfig, params, x, y, target, eps, step_size, state, i):
  prob = make_problem(apply_fn, config, params, x, y, target, eps)
  if config.method == "pgd":
    return _pgd_step(prob, x, eps, step_size, state, i)
  return _apgd_step(prob, x, eps, state, i)[0]


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def _host_finish(apply_fn, config: AttackConfig, params, x, y, target, eps, state) -> Best:
  prob = make_problem(apply_fn, config, params, x, y, target, eps)
  return _pgd_finish(prob, state) if config.method == "pgd" else state.best


@functools.partial(jax.jit, static_argnames=("select",))
def _host_improve(best: Best, new: Best, select: str) -> Best:
  return improve(best, new.x, new.loss, new.success, select)


_host_output = jax.jit(_output, static_argnames=("apply_fn", "config"))


def _attack_on_host(apply_fn, config: AttackConfig, params, x, y, target, eps, step_size, key):
  """:func:`_attack_compiled` with its loops in Python: the same iterations, in order."""
  best = init_best(x)
  for r in range(config.restarts):
    state = _host_start(apply_fn, config, params, x, y, target, eps, jax.random.fold_in(key, r))
    for i in range(config.steps):
      state = _host_step(apply_fn, config, params, x, y, target, eps, step_size, state, i)
    new = _host_finish(apply_fn, config, params, x, y, target, eps, state)
    best = new if config.restarts == 1 else _host_improve(best, new, config.select)
  return _host_output(apply_fn, config, params, x, y, target, eps, best.x)


def on_host_cpu(*trees: Any) -> bool:
  """Whether every array in ``trees`` is concrete (not traced) and lives on CPU.

  XLA:CPU compiles a convolution's input gradient inside a ``while`` loop to a
  generic loop nest instead of its fast convolution kernel (the kernel's
  transposed layout is not canonicalized there), about 4x slower than the same
  gradient compiled on its own (``benchmarks/bench_attacks.py``,
  ``apgd40_in_jit_over_apgd40``). Iterative attacks called with concrete CPU
  arrays therefore run their iterations from Python, one compiled iteration per
  call (a dispatch of well under a millisecond against tens of milliseconds of
  work); under ``jax.jit`` and on accelerators they stay one compiled loop.
  """
  platforms: set[str] = set()
  for leaf in jax.tree.leaves(trees):
    if isinstance(leaf, jax.core.Tracer):
      return False
    if isinstance(leaf, jax.Array):
      platforms.update(d.platform for d in leaf.devices())
    elif isinstance(leaf, np.ndarray):  # goes to the default device
      platforms.add(jax.default_backend())
  return platforms <= {"cpu"}


def attack(apply_fn, config: AttackConfig, params, x, y, target, eps, step_size, key):
  """The whole attack, restarts included: one compiled function per config, or (for PGD
  and APGD on concrete CPU arrays, see :func:`on_host_cpu`) one compiled iteration."""
  if config.method != "fgsm" and on_host_cpu(params, x, y, target, eps, step_size, key):
    return _attack_on_host(apply_fn, config, params, x, y, target, eps, step_size, key)
  return _attack_compiled(apply_fn, config, params, x, y, target, eps, step_size, key)


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def apgd_trace(apply_fn, config: AttackConfig, params, x, y, target, eps, key) -> dict[str, Any]:
  """One APGD run with its trace (for tests): iterates, losses and step sizes per step."""
  prob = make_problem(apply_fn, config, params, x, y, target, eps)
  final, (xs, losses, steps) = _apgd_scan(prob, x, eps, jax.random.fold_in(key, 0), trace=True)
  return {
    "x": xs,
    "loss": losses,
    "step": steps,
    "x_max": final.x_max,
    "loss_max": final.loss_max,
  }
