"""Jitted adversarial attacks: FGSM, PGD and APGD for l_inf and l_2 balls.

Every attack solves, per example ``b``, approximately

.. math::
  \\max_{\\delta}\\ L(f(x_b + \\delta), y_b)
  \\quad \\text{s.t.} \\quad \\|\\delta\\|_p \\le \\epsilon,\\quad
  \\ell \\le x_b + \\delta \\le u,

with ``p`` in ``{inf, 2}`` (``norm="linf"`` / ``"l2"``), the box
``[l, u] = bounds`` (``[0, 1]`` by default) and ``L`` one of the losses

* ``"ce"``: cross-entropy ``-log softmax(z)_y`` (targeted: ``+log softmax(z)_t``);
* ``"margin"``: the Carlini-Wagner margin ``max_{c != y} z_c - z_y``
  (targeted: ``z_t - max_{c != t} z_c``);
* ``"dlr"``: the difference of logits ratio of Croce and Hein (2020),
  ``-(z_y - max_{c != y} z_c) / (z_{pi_1} - z_{pi_3})`` with ``pi`` sorting the
  logits in decreasing order (targeted: ``-(z_y - z_t) / (z_{pi_1} -
  (z_{pi_3} + z_{pi_4}) / 2)``);
* ``"pair"``: the fixed-class margin ``z_t - z_y`` for a given ``target`` t.
  It is linear for a linear model, so its optimum has a closed form:
  ``eps ||w_t - w_y||_1`` (l_inf) or ``eps ||w_t - w_y||_2`` (l_2) without
  the box, which the tests check the attacks against.

Per-norm rules are small functions in a dict (``_RULES``): the ascent
direction (``sign(g)`` for l_inf, ``g / ||g||_2`` for l_2), the projection on
the ball (clipping, rescaling), the random start (uniform in the ball: for
l_2 a direction uniform on the sphere with radius ``eps U^{1/d}``). After each
step the iterate is projected on the ball and then clipped to the box; for a
point ``x`` in the box, clipping only shrinks every ``|delta_i|``, so the
result stays in the ball.

**Which point is returned.** Every evaluated iterate (and every restart) is a
candidate. With ``select="success"`` (default) an example keeps the first
candidate that succeeds (misclassified; with a ``target``: classified as the
target), else the candidate with the highest loss. With ``select="loss"`` it
keeps the highest-loss candidate. Restart ``r`` draws its random start from
``jax.random.fold_in(key, r)``, so ``restarts=R`` contains the run of
``restarts=1`` with the same key and is never weaker than it; likewise, with
a fixed ``step_size``, more PGD steps extend the same trajectory.

**Compilation.** Each attack is one jitted function; ``apply_fn`` and the
configuration (norm, steps, restarts, loss, bounds, ...) are static, while
``params``, ``x``, ``y``, ``eps``, ``step_size`` and ``key`` are traced: a
second call with the same ``apply_fn`` object, configuration and shapes does
not recompile, whatever the values of ``eps``. Pass the same ``apply_fn``
object each time (a new ``lambda`` per call compiles anew). The public
functions validate their input first; checks that need values (labels in
range, ``x`` in the box, ``eps >= 0``) run only on concrete arrays, so the
attacks can be called from inside another jitted function (e.g. an
adversarial training step), where those checks are skipped. Results are
wrapped in ``lax.stop_gradient``.

``apply_fn(params, x)`` must return logits ``(B, C)`` and treat examples
independently (BatchNorm in inference mode): one backward pass of the summed
per-example losses then gives every example's input gradient.

References:
  Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial
  examples. arXiv:1412.6572, 2014.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models
  resistant to adversarial attacks. arXiv:1706.06083, 2017.
  Carlini, Wagner. Towards evaluating the robustness of neural networks.
  arXiv:1608.04644, 2016.
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxjac._src import checks
from jaxjac._src.jacobian import ApplyFn, Params

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin", "dlr", "pair")
SELECTS = ("success", "loss")
METHODS = ("fgsm", "pgd", "apgd")

_TINY = 1e-12


# ----------------------------------------------------------------------------
# Per-example helpers and per-norm rules.


def _per_example(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a ``(B,)`` array to broadcast against ``x`` of shape ``(B, ...)``."""
  return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _l2(v: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def _linf(v: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(v.reshape(v.shape[0], -1)), axis=1)


def perturbation_norm(delta: jax.Array, norm: str) -> jax.Array:
  """Per-example ``||delta_b||_p`` over all non-batch dims, shape ``(B,)``.

  Args:
    delta: perturbations ``(B, ...)``.
    norm: ``"linf"`` or ``"l2"``.
  """
  checks.check_choice(norm, "norm", NORMS)
  return _RULES[norm].size(delta)


class _NormRules(NamedTuple):
  """The steps of an attack that depend on the norm of the ball."""

  size: Callable[[jax.Array], jax.Array]  # delta -> (B,) norms
  ascent: Callable[[jax.Array], jax.Array]  # gradient -> unit-norm ascent direction
  project: Callable[[jax.Array, jax.Array], jax.Array]  # (delta, eps) -> delta in ball
  uniform: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (key, x, eps) -> delta
  boundary: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # APGD's start


def _linf_ascent(g):
  return jnp.sign(g)


def _linf_project(delta, eps):
  return jnp.clip(delta, -eps, eps)


def _linf_uniform(key, x, eps):
  return eps * jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)


def _linf_boundary(key, x, eps):
  t = jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)
  return eps * t / _per_example(jnp.maximum(_linf(t), _TINY), x)


def _l2_ascent(g):
  return g / _per_example(jnp.maximum(_l2(g), _TINY), g)


def _l2_project(delta, eps):
  scale = jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), _TINY))
  return delta * _per_example(scale, delta)


def _l2_uniform(key, x, eps):
  kd, kr = jax.random.split(key)
  d = math.prod(x.shape[1:])
  direction = _l2_ascent(jax.random.normal(kd, x.shape, x.dtype))
  radius = eps * jax.random.uniform(kr, (x.shape[0],), x.dtype) ** (1.0 / d)
  return direction * _per_example(radius, x)


def _l2_boundary(key, x, eps):
  return eps * _l2_ascent(jax.random.normal(key, x.shape, x.dtype))


_RULES = {
  "linf": _NormRules(_linf, _linf_ascent, _linf_project, _linf_uniform, _linf_boundary),
  "l2": _NormRules(_l2, _l2_ascent, _l2_project, _l2_uniform, _l2_boundary),
}


# ----------------------------------------------------------------------------
# Losses (to be maximized) and the success criterion.


def _others_max(logits: jax.Array, cls: jax.Array) -> jax.Array:
  """``max_{c != cls} z_c`` per example."""
  mask = jax.nn.one_hot(cls, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)


def _take(logits: jax.Array, cls: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits, cls[:, None], axis=-1)[:, 0]


def _ce(logits, y, target, targeted):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return _take(logp, target) if targeted else -_take(logp, y)


def _margin(logits, y, target, targeted):
  if targeted:
    return _take(logits, target) - _others_max(logits, target)
  return _others_max(logits, y) - _take(logits, y)


def _dlr(logits, y, target, targeted):
  z = jnp.sort(logits, axis=-1)  # ascending: z[:, -1] is the largest logit
  if targeted:
    scale = z[:, -1] - 0.5 * (z[:, -3] + z[:, -4])
    return -(_take(logits, y) - _take(logits, target)) / (scale + _TINY)
  return -(_take(logits, y) - _others_max(logits, y)) / (z[:, -1] - z[:, -3] + _TINY)


def _pair(logits, y, target, targeted):
  del targeted  # Always relative to `target`.
  return _take(logits, target) - _take(logits, y)


_LOSSES = {"ce": _ce, "margin": _margin, "dlr": _dlr, "pair": _pair}


def attack_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  loss: str = "ce",
  target: jax.Array | None = None,
) -> jax.Array:
  """Per-example attack objective ``(B,)`` (the attacks maximize it).

  Args:
    logits: ``(B, C)``.
    labels: true classes ``(B,)``.
    loss: ``"ce"``, ``"margin"``, ``"dlr"`` or ``"pair"`` (see the module
      docstring for the formulas).
    target: target classes ``(B,)`` for the targeted variants; required by
      ``"pair"``.
  """
  checks.check_choice(loss, "loss", LOSSES)
  if loss == "pair" and target is None:
    raise ValueError("`target` is required by loss='pair' (the fixed class t in z_t - z_y).")
  targeted = target is not None
  return _LOSSES[loss](logits, labels, labels if target is None else target, targeted)


def _success(logits, y, target, targeted):
  pred = jnp.argmax(logits, axis=-1)
  return pred == target if targeted else pred != y


# ----------------------------------------------------------------------------
# The static configuration and the jitted core.


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


class _Best(NamedTuple):
  x: jax.Array
  loss: jax.Array
  success: jax.Array


def _improve(best: _Best, x, loss, success, select: str) -> _Best:
  """Keeps, per example, the better of ``best`` and the candidate ``x``."""
  if select == "loss":
    take = loss > best.loss
  else:  # First success wins; among failures, the highest loss.
    take = (success & ~best.success) | (~best.success & ~success & (loss > best.loss))
  return _Best(
    jnp.where(_per_example(take, x), x, best.x),
    jnp.where(take, loss, best.loss),
    jnp.where(take, success, best.success),
  )


class _Problem(NamedTuple):
  """The closed-over pieces of one attack call (not a pytree; used in tracing)."""

  cfg: AttackConfig
  rules: _NormRules
  value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]
  value: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  project: Callable[[jax.Array], jax.Array]


def _make_problem(apply_fn, cfg, params, x, y, target, eps) -> _Problem:
  rules = _RULES[cfg.norm]
  loss_fn = _LOSSES[cfg.loss]
  lo, hi = cfg.bounds

  def value(xa):
    logits = apply_fn(params, xa)
    losses = loss_fn(logits, y, target, cfg.targeted)
    return losses, _success(logits, y, target, cfg.targeted)

  def total(xa):
    losses, success = value(xa)
    return jnp.sum(losses), (losses, success)

  def value_and_grad(xa):
    (_, (losses, success)), g = jax.value_and_grad(total, has_aux=True)(xa)
    return losses, success, g

  def project(xa):
    return jnp.clip(x + rules.project(xa - x, eps), lo, hi)

  return _Problem(cfg, rules, value_and_grad, value, project)


def _init_best(x: jax.Array) -> _Best:
  b = x.shape[0]
  return _Best(x, jnp.full((b,), -jnp.inf, x.dtype), jnp.zeros((b,), bool))


def _fgsm_run(prob: _Problem, x, eps, step_size, key) -> _Best:
  del step_size, key
  _, _, g = prob.value_and_grad(x)
  x_adv = prob.project(x + eps * prob.rules.ascent(g))
  losses, success = prob.value(x_adv)
  return _Best(x_adv, losses, success)


def _pgd_run(prob: _Problem, x, eps, step_size, key) -> _Best:
  cfg, rules = prob.cfg, prob.rules
  x0 = prob.project(x + rules.uniform(key, x, eps)) if cfg.random_start else x

  def body(_, carry):
    xa, best = carry
    losses, success, g = prob.value_and_grad(xa)
    best = _improve(best, xa, losses, success, cfg.select)
    return prob.project(xa + step_size * rules.ascent(g)), best

  xa, best = lax.fori_loop(0, cfg.steps, body, (x0, _init_best(x)))
  losses, success = prob.value(xa)
  return _improve(best, xa, losses, success, cfg.select)


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
  best: _Best  # the returned candidate (see `select`)


def _apgd_run(prob: _Problem, x, eps, step_size, key) -> _Best:
  """One run of APGD (Croce and Hein 2020, Algorithm 1).

  Mirrors the reference implementation: the checkpoint interval starts at
  ``max(int(0.22 N), 1)`` and shrinks by ``max(int(0.03 N), 1)`` per checkpoint
  down to ``max(int(0.06 N), 1)``; at a checkpoint the step size of an example
  is halved and it restarts from its best point when the loss increased in at
  most a fraction ``rho = 0.75`` of the interval's steps, or when the step was
  not halved at the previous checkpoint and the best loss has not improved
  since.
  """
  del step_size
  cfg, rules = prob.cfg, prob.rules
  n = cfg.steps
  first_interval = max(int(0.22 * n), 1)
  min_interval = max(int(0.06 * n), 1)
  decrement = max(int(0.03 * n), 1)
  rho, alpha = 0.75, 0.75
  b = x.shape[0]

  x0 = prob.project(x + rules.boundary(key, x, eps)) if cfg.random_start else x
  loss0, success0, g0 = prob.value_and_grad(x0)
  state = _APGDState(
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
    interval=jnp.asarray(first_interval, jnp.int32),
    loss_max_at_check=loss0,
    reduced_at_check=jnp.ones((b,), bool),
    best=_improve(_init_best(x), x0, loss0, success0, cfg.select),
  )

  def body(i, s: _APGDState) -> _APGDState:
    a = jnp.where(i > 0, alpha, 1.0).astype(x.dtype)
    z = prob.project(s.x + _per_example(s.step, x) * rules.ascent(s.g))
    x_new = prob.project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_old))
    losses, success, g = prob.value_and_grad(x_new)
    best = _improve(s.best, x_new, losses, success, cfg.select)

    improved = losses > s.loss_max
    x_max = jnp.where(_per_example(improved, x), x_new, s.x_max)
    g_max = jnp.where(_per_example(improved, x), g, s.g_max)
    loss_max = jnp.where(improved, losses, s.loss_max)
    num_increase = s.num_increase + (losses > s.loss_prev).astype(jnp.int32)
    since_check = s.since_check + 1

    check = since_check == s.interval
    oscillating = num_increase.astype(x.dtype) <= rho * s.interval.astype(x.dtype)
    stalled = ~s.reduced_at_check & (s.loss_max_at_check >= loss_max)
    halve = oscillating | stalled
    reduce = check & halve
    reduce_x = _per_example(reduce, x)
    return _APGDState(
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

  return lax.fori_loop(0, n, body, state).best


_RUNS = {"fgsm": _fgsm_run, "pgd": _pgd_run, "apgd": _apgd_run}


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"))
def _attack(apply_fn, config, params, x, y, target, eps, step_size, key):
  """The whole attack, restarts included: one jitted function per config."""
  prob = _make_problem(apply_fn, config, params, x, y, target, eps)
  run = functools.partial(_RUNS[config.method], prob, x, eps, step_size)
  if config.restarts == 1:
    return lax.stop_gradient(run(jax.random.fold_in(key, 0)).x)

  def restart(r, best):
    new = run(jax.random.fold_in(key, r))
    return _improve(best, new.x, new.loss, new.success, config.select)

  # From the empty candidate, restart 0 is always taken; the run is traced once.
  best = lax.fori_loop(0, config.restarts, restart, _init_best(x))
  return lax.stop_gradient(best.x)


# ----------------------------------------------------------------------------
# Validation and the public functions.


def _is_concrete(a: Any) -> bool:
  return not isinstance(a, jax.core.Tracer)


def _check_labels(labels: Any, name: str, batch: int, num_classes: int) -> None:
  dtype = getattr(labels, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{name}` must be an integer array of class indices, got {labels!r:.80}.")
  if tuple(np.shape(labels)) != (batch,):
    raise ValueError(f"`{name}` must have shape ({batch},) like x's batch, got {np.shape(labels)}.")
  if _is_concrete(labels) and batch:
    values = np.asarray(labels)  # On the host: jnp ops would be staged under a trace.
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
      raise ValueError(
        f"`{name}` must lie in [0, {num_classes}) for logits with {num_classes} classes, "
        f"got values in [{lo}, {hi}]."
      )


def check_bounds(bounds: Any) -> tuple[float, float]:
  """Returns ``bounds`` as a pair of Python floats ``low < high``, else raises."""
  try:
    lo, hi = (float(b) for b in bounds)
  except (TypeError, ValueError):
    raise TypeError(f"`bounds` must be a pair of floats (low, high), got {bounds!r}.") from None
  if math.isnan(lo) or math.isnan(hi) or not lo < hi:
    raise ValueError(f"`bounds` must satisfy low < high, got {bounds!r}.")
  return lo, hi


def check_in_box(x: Any, bounds: tuple[float, float], name: str = "x") -> None:
  """Raises ValueError if a concrete ``x`` has entries outside ``bounds``."""
  if not _is_concrete(x) or np.size(x) == 0:
    return
  values = np.asarray(x)
  lo, hi = float(values.min()), float(values.max())
  if math.isnan(lo) or math.isnan(hi):
    raise ValueError(f"`{name}` contains NaN.")
  if lo < bounds[0] or hi > bounds[1]:
    raise ValueError(
      f"`{name}` must lie in the box bounds={bounds}, got values in [{lo:.6g}, {hi:.6g}]; "
      "rescale the inputs or pass `bounds`."
    )


@functools.lru_cache(maxsize=128)
def _cached_logits_shape(apply_fn, params_struct, x_struct) -> tuple[int, ...]:
  treedef, leaves = params_struct

  def fn(xb):  # Under eval_shape the zeros are abstract: nothing is allocated.
    params = jax.tree.unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in leaves])
    return apply_fn(params, xb)

  return checks.batch_output_shape(fn, jax.ShapeDtypeStruct(*x_struct))


def _logits_shape(apply_fn, params, x) -> tuple[int, ...]:
  """``apply_fn``'s output shape, traced once per model and input shapes."""
  leaves, treedef = jax.tree.flatten(params)
  try:
    structs = tuple((tuple(np.shape(v)), jnp.result_type(v)) for v in leaves)
  except TypeError:  # Non-array leaves: no caching.
    return checks.batch_output_shape(lambda xb: apply_fn(params, xb), x)
  return _cached_logits_shape(apply_fn, (treedef, structs), (tuple(x.shape), x.dtype))


def _prepare(
  method,
  apply_fn,
  params,
  x,
  y,
  *,
  eps,
  norm,
  steps,
  restarts,
  loss,
  target,
  random_start,
  select,
  bounds,
  key,
  step_size,
):
  """Validates the arguments; returns the static config and the traced arguments."""
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  try:
    hash(apply_fn)
  except TypeError:
    raise TypeError(
      "`apply_fn` must be hashable (it is a static argument of the jitted attack); "
      "pass e.g. `model.apply` or a module-level function."
    ) from None
  checks.check_choice(norm, "norm", NORMS)
  checks.check_choice(loss, "loss", LOSSES)
  checks.check_choice(select, "select", SELECTS)
  steps = checks.check_positive_int(steps, "steps")
  restarts = checks.check_positive_int(restarts, "restarts")
  if not isinstance(random_start, bool):
    raise TypeError(f"`random_start` must be a bool, got {random_start!r}.")
  if restarts > 1 and not random_start:
    raise ValueError(
      f"`restarts`={restarts} needs `random_start=True`: without a random start every "
      "restart repeats the same run."
    )
  if (random_start or restarts > 1) and method != "fgsm":
    checks.check_key(key, needed_by=f"{method} with a random start")
  bounds = check_bounds(bounds)
  checks.check_float_array(x, "x", min_ndim=2)
  if np.ndim(eps) != 0:
    raise ValueError(f"`eps` must be a scalar, got shape {np.shape(eps)}.")
  checks.check_eps(eps)
  if step_size is not None:
    if np.ndim(step_size) != 0:
      raise ValueError(f"`step_size` must be a scalar, got shape {np.shape(step_size)}.")
    checks.check_eps(step_size, "step_size")
  out_shape = _logits_shape(apply_fn, params, x)
  if len(out_shape) != 2:
    raise ValueError(f"`apply_fn` must return logits of shape (B, C), got {out_shape}.")
  num_classes = out_shape[1]
  batch = x.shape[0]
  _check_labels(y, "y", batch, num_classes)
  if loss == "pair" and target is None:
    raise ValueError("`target` is required by loss='pair' (the fixed class t in z_t - z_y).")
  if target is not None:
    _check_labels(target, "target", batch, num_classes)
    if _is_concrete(target) and _is_concrete(y) and np.any(np.asarray(target) == np.asarray(y)):
      raise ValueError("`target` must differ from the true label `y` for every example.")
  min_classes = {"dlr": 4 if target is not None else 3, "margin": 2, "pair": 2, "ce": 1}[loss]
  if num_classes < min_classes:
    raise ValueError(
      f"loss={loss!r} needs at least {min_classes} classes, the logits have {num_classes}."
    )
  check_in_box(x, bounds)

  config = AttackConfig(
    method=method,
    norm=norm,
    steps=steps,
    restarts=restarts,
    loss=loss,
    targeted=target is not None,
    random_start=random_start,
    select=select,
    bounds=bounds,
  )
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(0.0 if step_size is None else step_size, x.dtype)
  if key is None:
    key = jax.random.key(0)  # Unused: no randomness in this configuration.
  target = y if target is None else target
  return config, (params, x, y, target, eps, step_size, key)


def fgsm(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  loss: str = "ce",
  target: jax.Array | None = None,
  bounds: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Fast gradient (sign) method: one step of length ``eps``.

  .. math::
    x' = \\mathrm{clip}_{[l, u]}\\big(x + \\epsilon\\, s(\\nabla_x L)\\big),
    \\qquad s(g) = \\mathrm{sign}(g)\\ (\\ell_\\infty),\\quad
    s(g) = g / \\|g\\|_2\\ (\\ell_2).

  For a loss linear in ``x`` and no box this is the exact maximizer over the
  ball (e.g. ``loss="pair"`` on a linear model).

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters (for Flax linen: ``{"params": p}``).
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``, integers in ``[0, C)``.
    eps: radius, >= 0.
    norm: ``"linf"`` or ``"l2"``.
    loss: ``"ce"``, ``"margin"``, ``"dlr"`` or ``"pair"``.
    target: target classes ``(B,)`` for a targeted attack (the loss then
      favours ``target``); required by ``"pair"``.
    bounds: the box ``(low, high)``; ``(-inf, inf)`` for none.

  Returns:
    ``x_adv`` with ``x``'s shape and dtype, no gradient flowing through it.

  Example:
    >>> x_adv = jaxjac.attacks.fgsm(model.apply, variables, x, y, eps=0.1, norm="linf")

  References:
    Goodfellow, Shlens, Szegedy. arXiv:1412.6572, 2014.
  """
  config, args = _prepare(
    "fgsm",
    apply_fn,
    params,
    x,
    y,
    eps=eps,
    norm=norm,
    steps=1,
    restarts=1,
    loss=loss,
    target=target,
    random_start=False,
    select="success",
    bounds=bounds,
    key=None,
    step_size=None,
  )
  return _attack(apply_fn, config, *args)


def pgd(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  steps: int,
  step_size: float | jax.Array | None = None,
  key: jax.Array | None = None,
  restarts: int = 1,
  loss: str = "ce",
  random_start: bool = True,
  target: jax.Array | None = None,
  select: str = "success",
  bounds: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Projected gradient ascent (PGD) with random start and restarts.

  .. math::
    x^{(0)} = \\Pi(x + \\delta_0), \\qquad
    x^{(k+1)} = \\Pi\\big(x^{(k)} + \\alpha\\, s(\\nabla_x L(x^{(k)}))\\big),

  with ``Pi`` the projection on the ``eps``-ball around ``x`` followed by
  clipping to the box, ``s`` the steepest-ascent direction of the norm
  (``sign`` for l_inf, ``g / ||g||_2`` for l_2) and ``delta_0`` uniform in
  the ball. Each iterate (``x^(0)`` to ``x^(steps)``) is a candidate; see the
  module docstring for which one is returned.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``.
    eps: radius, >= 0 (traced: changing it does not recompile).
    norm: ``"linf"`` or ``"l2"``.
    steps: gradient steps per restart, >= 1.
    step_size: ``alpha``; ``None`` takes ``2.5 * eps / steps`` (Madry et al.).
    key: PRNG key (``jax.random.key``), required with ``random_start``.
      Restart ``r`` uses ``jax.random.fold_in(key, r)``.
    restarts: independent random starts, >= 1.
    loss: ``"ce"``, ``"margin"`` (Carlini-Wagner), ``"dlr"`` or ``"pair"``.
    random_start: start uniformly in the ball (else at ``x``).
    target: target classes ``(B,)`` for a targeted attack; required by
      ``"pair"``.
    select: ``"success"`` (first misclassified candidate, else highest
      loss) or ``"loss"`` (highest loss).
    bounds: the box ``(low, high)``.

  Returns:
    ``x_adv`` with ``x``'s shape, ``||x_adv - x||_p <= eps`` and inside the
    box, no gradient flowing through it.

  Example:
    >>> x_adv = jaxjac.attacks.pgd(model.apply, variables, x, y, eps=0.3, norm="linf",
    ...                            steps=40, key=jax.random.key(0))

  References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. arXiv:1706.06083, 2017.
  """
  if step_size is None:
    checks.check_positive_int(steps, "steps")
    step_size = 2.5 * eps / steps
  config, args = _prepare(
    "pgd",
    apply_fn,
    params,
    x,
    y,
    eps=eps,
    norm=norm,
    steps=steps,
    restarts=restarts,
    loss=loss,
    target=target,
    random_start=random_start,
    select=select,
    bounds=bounds,
    key=key,
    step_size=step_size,
  )
  return _attack(apply_fn, config, *args)


def apgd(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  steps: int,
  key: jax.Array | None = None,
  loss: str = "ce",
  restarts: int = 1,
  random_start: bool = True,
  target: jax.Array | None = None,
  select: str = "success",
  bounds: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Auto-PGD: step-size-free PGD with momentum (Croce and Hein 2020).

  With ``eta^(0) = 2 eps``, ``alpha = 0.75`` (1 at the first step) and ``Pi``
  the projection on the ball and the box,

  .. math::
    z^{(k+1)} = \\Pi\\big(x^{(k)} + \\eta^{(k)} s(\\nabla L(x^{(k)}))\\big), \\quad
    x^{(k+1)} = \\Pi\\big(x^{(k)} + \\alpha (z^{(k+1)} - x^{(k)})
      + (1 - \\alpha)(x^{(k)} - x^{(k-1)})\\big).

  At checkpoints ``w_j ~ p_j N``, ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (integer intervals as in
  the reference code), the step of an
  example is halved and its iterate reset to its best point when (1) the
  loss rose in at most ``rho = 0.75`` of the steps since the last
  checkpoint, or (2) the step was not halved at the last checkpoint and the
  best loss did not improve since. The random start lies on the sphere of
  the ball (as in the reference code). ``steps = N`` iterations cost
  ``N + 1`` gradient evaluations.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``.
    eps: radius, >= 0.
    norm: ``"linf"`` or ``"l2"``.
    steps: iterations ``N`` per restart, >= 1.
    key: PRNG key, required with ``random_start``; restart ``r`` uses
      ``jax.random.fold_in(key, r)``.
    loss: ``"ce"`` or ``"dlr"`` as in the paper (``"margin"``, ``"pair"``
      also work); ``"dlr"`` needs ``C >= 3`` (targeted: ``C >= 4``).
    restarts: independent runs, >= 1.
    random_start: start on the sphere of the ball (else at ``x``).
    target: target classes ``(B,)``: targeted CE / DLR (APGD-T runs one
      call per target class).
    select: ``"success"`` or ``"loss"``, as in :func:`pgd`.
    bounds: the box ``(low, high)``.

  Returns:
    ``x_adv`` with ``x``'s shape, inside the ball and the box.

  References:
    Croce, Hein. Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  """
  config, args = _prepare(
    "apgd",
    apply_fn,
    params,
    x,
    y,
    eps=eps,
    norm=norm,
    steps=steps,
    restarts=restarts,
    loss=loss,
    target=target,
    random_start=random_start,
    select=select,
    bounds=bounds,
    key=key,
    step_size=None,
  )
  return _attack(apply_fn, config, *args)
