"""The train step: one jitted, donated update of a :class:`TrainState`.

The objective of one step on a batch ``(x, y)`` of size ``B`` is

.. math::
  L(\\theta) = (1 - w)\\,\\bar\\ell(x) + w\\,\\bar\\ell_{CE}(x_{adv})
    + \\frac{\\lambda_{JR}}{2} \\hat R(x)
    + \\frac{\\lambda_{IGR}}{2} \\frac{1}{B}\\sum_b \\|\\nabla_{x_b} \\ell_b\\|_2^2
    + \\frac{\\lambda_{WD}}{2} \\|\\theta\\|_2^2,

with ``bar l`` the data term (by default the batch-mean softmax
cross-entropy; :func:`jaxjac.first_order_robust_loss`,
:func:`jaxjac.jacobian_surrogate_loss` or any ``loss_fn``), ``x_adv`` a PGD
adversary (:func:`jaxjac.attacks.pgd`, ``w = 0`` without adversarial
training) and ``hat R`` the Jacobian penalty :func:`jaxjac.jacobian_penalty`
(``||J||_F^2`` or ``||J||_{1,1}``, averaged over the batch), optionally
amortized:

.. math::
  \\hat R_s(x) = k\\,[s \\bmod k = 0]\\;\\frac{1}{m} \\sum_{b \\in S_s} N(J_b),
  \\qquad S_s \\subset \\{1..B\\},\\ |S_s| = m = \\max(1, \\mathrm{round}(f B)),

with ``S_s`` uniform without replacement (sub-batch JR, ``f = jr_fraction``)
and ``k = jr_every`` (lazy JR, Karras et al. 2020). Both are unbiased:
``E_S[hat R] = R`` and the mean of ``hat R_s`` over ``k`` consecutive steps
is the full term, at ``f`` and ``1/k`` of the penalty's cost.

Per-step randomness: ``k = jax.random.fold_in(key, state.step)`` split into
three keys, for dropout, the Jacobian projections and the PGD start
(:func:`step_keys`); the sub-batch and a custom loss use keys folded from the
second.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
  Wu, Li. Adversarially robust generalization theory via Jacobian
  regularization. arXiv:2412.12449, 2024.
  Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. Analyzing and improving
  the image quality of StyleGAN. arXiv:1912.04958, 2020.
  Drucker, Le Cun. Improving generalization performance using double
  backpropagation. IEEE Trans. Neural Networks, 1992.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models
  resistant to adversarial attacks. arXiv:1706.06083, 2017.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxjac._src.penalty import jacobian_penalty, penalty_and_logits
from jaxjac._src.surrogates import (
  first_order_robust_loss,
  input_gradient,
  jacobian_surrogate_loss,
  softmax_cross_entropy,
)
from jaxjac._src.training.config import (
  LossSpec,
  Regularizer,
  loss_from_config,
  regularizer_from_config,
)
from jaxjac._src.training.state import TrainState

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]


class TrainStepFn(Protocol):
  """``train_step(state, batch, key) -> (state, metrics)``, compiled on call or ahead of
  time with ``train_step.lower(state, batch, key).compile()`` (``jax.jit``'s result, a
  :class:`LazyTrainStep`, or ``jaxjac.sharding.shard_train_step``'s)."""

  def __call__(
    self, state: TrainState, batch: Batch, key: jax.Array, /
  ) -> tuple[TrainState, Metrics]: ...

  def lower(self, *args: Any) -> Any: ...


LogitsFn = Callable[[Any, jax.Array], jax.Array]
LossFn = Callable[
  [LogitsFn, Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]
]
RESERVED_METRICS = ("loss", "data_loss", "penalty", "igr", "l2", "adv_ce", "adv_accuracy")


def step_keys(key: jax.Array, step: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The keys of one step: ``split(fold_in(key, step), 3)`` -> (dropout, jr, attack)."""
  keys = jax.random.split(jax.random.fold_in(key, step), 3)
  return keys[0], keys[1], keys[2]


def l2_penalty(params: Any) -> jax.Array:
  """``||theta||_2^2``, the sum of squares of every parameter."""
  return jnp.asarray(sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params)))  # 0: no leaves


def cross_entropy_loss(
  logits_fn: LogitsFn, params: Any, x: jax.Array, y: jax.Array, key: jax.Array
) -> tuple[jax.Array, Metrics]:
  """The default data term: batch-mean softmax cross-entropy, with ``ce`` and ``accuracy``."""
  del key
  return _ce_of_logits(logits_fn(params, x), y)


def _ce_of_logits(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, Metrics]:
  ce = jnp.mean(softmax_cross_entropy(logits, y))
  return ce, {"ce": ce, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def robust_loss(spec: LossSpec) -> LossFn:
  """The data term of ``config.loss`` as a ``loss_fn`` of :func:`make_train_step`.

  ``"first_order"``: :func:`jaxjac.first_order_robust_loss`,
  ``l + eps ||grad_x l||_q``; ``"surrogate"``:
  :func:`jaxjac.jacobian_surrogate_loss`, ``l + eps K_p N_p(J)`` (Wu and Li
  2024), both for the softmax cross-entropy and batch-averaged. The metrics
  are the value (under ``spec.name``) and the clean ``ce`` and ``accuracy``.
  """
  if spec.name == "ce":
    return cross_entropy_loss

  def loss_fn(logits_fn, params, x, y, key):
    if spec.name == "first_order":
      value = first_order_robust_loss(
        softmax_cross_entropy, logits_fn, params, x, y, eps=spec.eps, p=spec.p
      )
    else:
      value = jacobian_surrogate_loss(
        softmax_cross_entropy,
        logits_fn,
        params,
        x,
        y,
        eps=spec.eps,
        p=spec.p,
        estimator=spec.estimator,
        key=None if spec.estimator == "exact" else key,
      )
    _, aux = cross_entropy_loss(logits_fn, jax.lax.stop_gradient(params), x, y, key)
    return value, {spec.name: value, **aux}

  return loss_fn


def _sub_batch(x: jax.Array, fraction: float, key: jax.Array) -> jax.Array:
  """A uniformly random subset of ``max(1, round(fraction * B))`` rows of `x`."""
  if fraction >= 1:
    return x
  b = x.shape[0]
  m = max(1, int(round(fraction * b)))
  return x[jax.random.choice(key, b, (m,), replace=False)]


def _jr_options(reg: Regularizer) -> dict[str, Any]:
  """The penalty's keyword arguments from the regularizer (one place for both paths)."""
  return {
    "norm": reg.jr_norm,
    "estimator": reg.jr_estimator,
    "num_projections": reg.jr_num_projections,
    "mixes_batch": reg.jr_mixes_batch,
  }


def _jr_estimate(reg: Regularizer, logits_fn: LogitsFn, variables, x, key) -> jax.Array:
  """The (sub-batch) penalty ``(1/m) sum_{b in S} N(J_b)`` of the module docstring."""
  xs = _sub_batch(x, reg.jr_fraction, jax.random.fold_in(key, 2))
  return jacobian_penalty(logits_fn, variables, xs, key=key, **_jr_options(reg))


def _adversary(state: TrainState, x, y, key, reg: Regularizer) -> jax.Array:
  from jaxjac._src import attacks  # noqa: PLC0415 (optional at import time)

  return attacks.pgd(
    state.apply_fn,
    {"params": state.params},
    x,
    y,
    eps=reg.at_eps,
    norm=reg.at_norm,
    steps=reg.at_steps,
    step_size=reg.at_step_size,
    key=key,
    random_start=reg.at_random_start,
    select="loss",
  )


def _check_loss_output(out: Any) -> tuple[jax.Array, Metrics]:
  if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
    raise TypeError(
      f"`loss_fn` must return (scalar loss, dict of scalar metrics), got {type(out).__name__}."
    )
  value, aux = out
  if jnp.shape(value) != ():
    raise ValueError(f"`loss_fn` must return a scalar loss, got shape {jnp.shape(value)}.")
  clash = sorted(set(aux) & set(RESERVED_METRICS))
  if clash:
    raise ValueError(
      f"`loss_fn`'s metrics {clash} clash with the step's own; known: {RESERVED_METRICS}."
    )
  return value, dict(aux)


def _train_step(
  state: TrainState,
  batch: Batch,
  key: jax.Array,
  *,
  reg: Regularizer,
  loss_fn: LossFn,
  custom_loss: bool,
  jr_on: bool = True,
) -> tuple[TrainState, Metrics]:
  x, y = batch
  k_dropout, k_jr, k_at = step_keys(key, state.step)

  def train_apply(variables, xb):
    return state.apply_fn(variables, xb, train=True, rngs={"dropout": k_dropout})

  x_adv = None if reg.at_norm == "none" else _adversary(state, x, y, k_at, reg)

  # With the cross-entropy data term and a full-batch random penalty, one forward pass
  # serves both (jaxjac.penalty_and_logits): the same values, one network pass fewer.
  share = (
    loss_fn is cross_entropy_loss
    and reg.jr_lambda > 0
    and jr_on
    and reg.jr_fraction >= 1
    and reg.jr_estimator in ("projection", "jvp")
  )

  def objective(params):
    variables = {"params": params}
    if share:
      penalty, logits = penalty_and_logits(train_apply, variables, x, key=k_jr, **_jr_options(reg))
      loss, aux = _ce_of_logits(logits, y)
    else:
      loss, aux = _check_loss_output(
        loss_fn(train_apply, variables, x, y, jax.random.fold_in(k_jr, 1))
      )
    if custom_loss:
      aux["data_loss"] = loss
    if x_adv is not None:
      adv_logits = train_apply(variables, x_adv)
      aux["adv_ce"] = jnp.mean(softmax_cross_entropy(adv_logits, y))
      aux["adv_accuracy"] = jnp.mean(jnp.argmax(adv_logits, -1) == y)
      loss = (1.0 - reg.at_weight) * loss + reg.at_weight * aux["adv_ce"]
    if reg.jr_lambda > 0 and jr_on:
      if not share:
        penalty = _jr_estimate(reg, train_apply, variables, x, k_jr)
      aux["penalty"] = reg.jr_every * penalty
      loss = loss + (reg.jr_lambda / 2) * aux["penalty"]
    elif reg.jr_lambda > 0:  # a step lazy JR skips
      aux["penalty"] = jnp.zeros((), jnp.float32)
    if reg.igr_lambda > 0:
      _, grads_x = input_gradient(softmax_cross_entropy, train_apply, variables, x, y)
      aux["igr"] = jnp.mean(jnp.sum(jnp.square(grads_x.reshape(x.shape[0], -1)), axis=-1))
      loss = loss + (reg.igr_lambda / 2) * aux["igr"]
    if reg.weight_decay > 0:
      aux["l2"] = 0.5 * reg.weight_decay * l2_penalty(params)
      loss = loss + aux["l2"]
    return loss, aux

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads)
  metrics = {
    "loss": loss,
    **aux,
    "grad_norm": optax.tree.norm(grads),
    "lr": jnp.asarray(new_state.opt_state.hyperparams["learning_rate"], jnp.float32),
  }
  return new_state, metrics


def make_train_step(
  config: ml_collections.ConfigDict | Regularizer, *, loss_fn: LossFn | None = None
) -> TrainStepFn:
  """The jitted ``train_step(state, batch, key) -> (state, metrics)``.

  The regularizers of ``config.reg`` (or a :class:`Regularizer`) and the data
  term of ``config.loss`` are bound with ``functools.partial`` and the step is
  jitted with the state donated (``donate_argnums=0``): do not use the input
  state after the call. The step computes the objective in the module
  docstring on ``batch = (x, y)`` (``x`` float images ``(B, 28, 28, 1)``,
  ``y`` int labels ``(B,)``) with the keys :func:`step_keys` ``(key,
  state.step)``, and returns the updated state and scalar metrics of the
  *pre-update* parameters: ``loss`` (the whole objective), ``ce``,
  ``accuracy`` (training mode, so under dropout), ``penalty`` (the estimate
  ``hat R_s`` that enters the loss: the raw :func:`jaxjac.jacobian_penalty`
  without amortization, ``0`` on the steps lazy JR skips), ``igr`` (with
  IGR), ``l2`` (the term ``(lambda_WD / 2) ||theta||^2``, with weight decay),
  ``adv_ce``/``adv_accuracy`` (with AT), ``first_order``/``surrogate`` (with
  that ``config.loss``), ``data_loss`` and the metrics of a custom
  ``loss_fn``, ``grad_norm`` and ``lr`` (the rate of this update). With lazy
  JR (``jr_every > 1``) the result is a :class:`LazyTrainStep`: two programs
  compiled once each, chosen on the host by the step.

  With dropout, the loss, the Jacobian penalty and the input gradient all see
  the training-mode network with the same dropout key (one key per step);
  the PGD adversary attacks the evaluation-mode network and carries no
  gradient.

  Args:
    config: a training config (``config.reg``, ``config.loss``) or a
      :class:`Regularizer` (cross-entropy data term).
    loss_fn: replaces the data term: ``loss_fn(logits_fn, params, x, y, key)
      -> (scalar, {name: scalar})`` with ``logits_fn(params, x)`` the
      training-mode network, ``params`` the variables ``{"params": ...}`` to
      differentiate and ``key`` a per-step key. Its metrics are reported
      beside ``data_loss``; adversarial training still mixes in the
      cross-entropy of ``x_adv``. Only with ``config.loss.name == "ce"``.

  Example::

    config = jaxjac.training.default_config()
    config.reg.jr_lambda = 0.01
    state = jaxjac.training.create_train_state(config, key=jax.random.key(0),
                                               steps_per_epoch=600)
    train_step = jaxjac.training.make_train_step(config)
    state, metrics = train_step(state, (x, y), jax.random.key(1))  # x: (B, 28, 28, 1)

  Raises:
    ValueError: an invalid config, or both ``loss_fn`` and a non-CE
      ``config.loss.name``.
    TypeError: a ``loss_fn`` that is not callable.

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
  """
  if isinstance(config, Regularizer):
    reg, spec = config, LossSpec()
  elif not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(
      "`config` must be an ml_collections.ConfigDict (see "
      f"jaxjac.training.default_config()) or a Regularizer, got {type(config).__name__}."
    )
  else:
    reg, spec = regularizer_from_config(config.reg), loss_from_config(config.get("loss"))
  if loss_fn is not None:
    if not callable(loss_fn):
      raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    if spec.name != "ce":
      raise ValueError(
        f"pass either `loss_fn` or `config.loss.name` (got {spec.name!r}), not both."
      )
  step = functools.partial(
    _train_step, reg=reg, loss_fn=loss_fn or robust_loss(spec), custom_loss=loss_fn is not None
  )
  if reg.jr_every == 1 or reg.jr_lambda == 0:
    return jax.jit(step, donate_argnums=0)
  on = jax.jit(functools.partial(step, jr_on=True), donate_argnums=0)
  off = jax.jit(functools.partial(step, jr_on=False), donate_argnums=0)
  return LazyTrainStep(on, off, reg.jr_every)


class LazyTrainStep:
  """Lazy JR's step: two programs, with and without the penalty, chosen on the host.

  ``step(state, batch, key)`` runs ``on`` when ``state.step % every == 0``
  (reading the step on the host), else ``off``; each compiles once.
  ``lower(...).compile()`` compiles both ahead of time and returns another
  :class:`LazyTrainStep`. One program with ``lax.cond`` measured far slower on
  CPU (``benchmarks/bench_amortized.py``), so the choice is made on the host.
  """

  def __init__(self, on: TrainStepFn, off: TrainStepFn, every: int):
    self.on, self.off, self.every = on, off, every

  def __call__(self, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    step = state.step
    if isinstance(step, jax.Array) and not step.is_fully_addressable:
      step = step.addressable_data(0)
    fn = self.on if int(step) % self.every == 0 else self.off
    return fn(state, batch, key)

  def lower(self, *args: Any) -> Any:
    on, off, every = self.on.lower(*args), self.off.lower(*args), self.every

    class _Lowered:
      def compile(self) -> LazyTrainStep:
        return LazyTrainStep(on.compile(), off.compile(), every)

    return _Lowered()


def check_finite(metrics: Mapping[str, Any], *, step: int) -> None:
  """Raises FloatingPointError naming a NaN/inf metric (``loss`` first) and the step."""
  for name in sorted(metrics, key=lambda k: (k != "loss", k)):
    v = np.asarray(metrics[name])
    if not np.all(np.isfinite(v)):
      raise FloatingPointError(
        f"non-finite training metric {name!r} = {v.tolist()} at step {step}; "
        "stopping. Lower the learning rate or the regularization strength, or check "
        "the inputs for NaN."
      )
