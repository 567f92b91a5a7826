"""Training with Jacobian regularization, weight decay, dropout, input-gradient
regularization and PGD adversarial training: one jitted step, a resumable loop.

The objective of one step on a batch ``(x, y)`` of size ``B`` is

.. math::
  L(\\theta) = (1 - w)\\,\\bar\\ell(x) + w\\,\\bar\\ell(x_{adv})
    + \\frac{\\lambda_{JR}}{2} \\frac{1}{B}\\sum_b N(J_b)
    + \\frac{\\lambda_{IGR}}{2} \\frac{1}{B}\\sum_b \\|\\nabla_{x_b} \\ell_b\\|_2^2
    + \\frac{\\lambda_{WD}}{2} \\|\\theta\\|_2^2,

with ``l`` the softmax cross-entropy (``bar l`` its batch mean), ``J_b`` the
input-output Jacobian of the logits, ``N`` the squared Frobenius norm (or
``||J||_{1,1}``) estimated by :func:`jaxjac.jacobian_penalty`, and ``x_adv``
a PGD adversary (:func:`jaxjac.attacks.pgd`, ``w = 0`` without adversarial
training). Every term is optional; the configuration is bound into the step
with ``functools.partial`` before ``jax.jit``.

Per-step randomness: ``k = jax.random.fold_in(key, state.step)`` split into
three keys, for dropout, the Jacobian projections and the PGD start
(:func:`step_keys`). Data order: epoch ``e`` is
``jaxjac.data.epoch_permutation(N, seed=config.seed, epoch=e)``, so a run
resumed from a checkpoint at step ``s`` skips the ``s mod steps_per_epoch``
batches already consumed and reproduces the uninterrupted run.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
  Wu, Li. Adversarially robust generalization theory via Jacobian
  regularization. arXiv:2412.12449, 2024.
  Drucker, Le Cun. Improving generalization performance using double
  backpropagation. IEEE Trans. Neural Networks, 1992.
  Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models
  resistant to adversarial attacks. arXiv:1706.06083, 2017.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from jaxjac._src import checks
from jaxjac._src import models as models_lib
from jaxjac._src import sharding as sharding_lib
from jaxjac._src.jacobian import ESTIMATORS
from jaxjac._src.penalty import jacobian_penalty, jacobian_penalty_per_example
from jaxjac._src.surrogates import input_gradient, softmax_cross_entropy

Batch = tuple[jax.Array, jax.Array]
Metrics = dict[str, jax.Array]
TrainStepFn = Callable[["TrainState", Batch, jax.Array], tuple["TrainState", Metrics]]

OPTIMIZERS = ("sgd", "adam")
JR_NORMS = ("frobenius", "l11")
AT_NORMS = ("none", "linf", "l2")
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# ----------------------------------------------------------------------------- config


def default_config() -> ml_collections.ConfigDict:
  """The base training configuration: LeNet' on MNIST, no regularizer.

  Fields (every one can be overridden on the command line,
  ``--config.reg.jr_lambda=0.01``):

  * ``seed``: the run's seed: PRNG key ``jax.random.key(seed)`` for the
    initialization and the steps, and the data order of every epoch.
  * ``model``: ``name`` (``"lenet"`` or ``"mlp"``) and the model's attributes
    (``dropout_rate``; ``features`` for the MLP), passed to
    :func:`jaxjac.models.get_model`.
  * ``data``: :func:`jaxjac.data.load_mnist` arguments (``source``,
    ``data_dir`` (``""``: none), ``dataset``), ``train_size`` and
    ``test_size`` (``0``: all; else a random subset drawn from ``seed``:
    the same for every run with that seed).
  * ``batch_size``, ``num_epochs``; ``num_steps > 0`` overrides the epochs.
  * ``optimizer``: ``name`` (``"sgd"`` with ``momentum``/``nesterov``, or
    ``"adam"``), ``learning_rate``, and step-wise quenches: the rate is
    multiplied by ``quench_factor`` at each epoch in ``quench_epochs``.
  * ``reg``: ``weight_decay`` (``lambda_WD``), ``jr_lambda`` with
    ``jr_norm``/``jr_estimator``/``jr_num_projections``/``jr_per_example``,
    ``igr_lambda``, and PGD adversarial training: ``at_norm`` (``"none"``,
    ``"linf"``, ``"l2"``), ``at_eps``, ``at_steps``, ``at_step_size``
    (``0``: ``2.5 eps / steps``), ``at_weight`` (``w`` above; 1 is Madry et
    al.), ``at_random_start``.
  * Logging: ``log_every`` steps (a JSON line with the interval's means),
    ``heldout_every`` steps (mean ``||J||_F`` on ``heldout_size`` test
    examples; also at every epoch end), ``eval_batch_size``,
    ``progress_bar``.
  * Checkpoints: ``checkpoint_every`` steps and at the end, keeping
    ``keep_checkpoints``.
  * ``num_devices``: data parallelism (:mod:`jaxjac.sharding`): ``1`` one
    device (no mesh), ``0`` all devices, ``n`` the first ``n``; the batch is
    split over them (``batch_size`` must be a multiple) and the parameters
    replicated.

  The optimizer defaults (SGD, momentum 0.9, rate 0.01, batch 100, 50
  epochs, ten-fold quenches at epochs 25 and 40) are this library's choice
  in the spirit of Hoffman et al.'s step-wise schedule, not values copied
  from the paper.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"name": "lenet", "dropout_rate": 0.0})
  c.data = ml_collections.ConfigDict(
      {"source": "auto", "data_dir": "", "dataset": "mnist", "train_size": 0, "test_size": 0}
  )
  c.batch_size = 100
  c.num_epochs = 50
  c.num_steps = 0
  c.optimizer = ml_collections.ConfigDict(
      {
          "name": "sgd",
          "learning_rate": 0.01,
          "momentum": 0.9,
          "nesterov": False,
          "quench_epochs": (25.0, 40.0),
          "quench_factor": 0.1,
      }
  )
  c.reg = ml_collections.ConfigDict(
      {
          "weight_decay": 0.0,
          "jr_lambda": 0.0,
          "jr_norm": "frobenius",
          "jr_estimator": "projection",
          "jr_num_projections": 1,
          "jr_per_example": False,
          "igr_lambda": 0.0,
          "at_norm": "none",
          "at_eps": 0.3,
          "at_steps": 10,
          "at_step_size": 0.0,
          "at_weight": 1.0,
          "at_random_start": True,
      }
  )
  c.log_every = 50
  c.heldout_every = 600
  c.heldout_size = 100
  c.eval_batch_size = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.progress_bar = True
  c.num_devices = 1
  return c


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` shrunk to run end to end in seconds on a CPU.

  A one-hidden-layer MLP (32 units) instead of the model, 512 training and
  256 test examples, batch 32, 24 steps without quenches, 3 PGD steps, logs,
  held-out norms and checkpoints every 8 steps, no progress bar. The
  regularizers and their strengths are kept.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  c.model = ml_collections.ConfigDict(
      {"name": "mlp", "features": (32,), "dropout_rate": config.model.dropout_rate}
  )
  c.data.train_size = 512
  c.data.test_size = 256
  c.batch_size = 32
  c.num_steps = 24
  c.optimizer.quench_epochs = ()
  c.reg.at_steps = min(config.reg.at_steps, 3)
  c.log_every = 8
  c.heldout_every = 8
  c.heldout_size = 32
  c.eval_batch_size = 256
  c.checkpoint_every = 8
  c.progress_bar = False
  return c


VARIANTS = ("", "tiny")


def config_variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """`config` for ``get_config(arg)``: ``None`` or ``""`` as is, ``"tiny"``: :func:`tiny`.

  Raises:
    ValueError: any other `arg`.
  """
  checks.check_choice(arg or "", "get_config(arg)", VARIANTS)
  return tiny(config) if arg == "tiny" else config


class Regularizer(NamedTuple):
  """Static, hashable regularizer configuration bound into the train step.

  Attributes:
    weight_decay: ``lambda_WD``; adds ``(lambda_WD / 2) ||theta||_2^2`` over
      all parameters (weights and biases).
    jr_lambda: ``lambda_JR``; adds ``(lambda_JR / 2) jacobian_penalty(...)``.
    jr_norm: ``"frobenius"`` (squared) or ``"l11"``.
    jr_estimator: ``"exact"``, ``"projection"`` or ``"jvp"``.
    jr_num_projections: samples per example of the random estimators.
    jr_per_example: see :func:`jaxjac.jacobian_penalty`.
    igr_lambda: ``lambda_IGR``; adds ``(lambda_IGR / 2) mean_b ||grad_x l_b||^2``
      (double backpropagation).
    at_norm: ``"none"``, ``"linf"`` or ``"l2"``: PGD adversarial training.
    at_eps: PGD radius.
    at_steps: PGD steps.
    at_step_size: PGD step; ``None`` takes ``2.5 * at_eps / at_steps``.
    at_weight: weight ``w`` of the adversarial loss, in ``(0, 1]``.
    at_random_start: PGD starts uniformly in the ball.
  """

  weight_decay: float = 0.0
  jr_lambda: float = 0.0
  jr_norm: str = "frobenius"
  jr_estimator: str = "projection"
  jr_num_projections: int = 1
  jr_per_example: bool = False
  igr_lambda: float = 0.0
  at_norm: str = "none"
  at_eps: float = 0.3
  at_steps: int = 10
  at_step_size: float | None = None
  at_weight: float = 1.0
  at_random_start: bool = True


def _check_nonneg(value: Any, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"`{name}` must be a number >= 0, got {value!r}.")
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
  return float(value)


def _check_bool(value: Any, name: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be True or False, got {value!r}.")
  return bool(value)


def regularizer_from_config(reg: Mapping[str, Any]) -> Regularizer:
  """Validates ``config.reg`` and returns the :class:`Regularizer` it describes.

  Raises:
    ValueError: an unknown field, an unknown choice, a negative strength,
      ``at_eps <= 0`` or ``at_weight`` outside ``(0, 1]`` with adversarial
      training on.
    TypeError: a field of the wrong type.
  """
  reg = dict(reg)
  unknown = sorted(set(reg) - set(Regularizer._fields))
  if unknown:
    raise ValueError(
        f"`config.reg` has unknown field(s) {unknown}; known: {list(Regularizer._fields)}."
    )
  out = Regularizer()._replace(**reg)
  checks.check_choice(out.jr_norm, "config.reg.jr_norm", JR_NORMS)
  checks.check_choice(out.jr_estimator, "config.reg.jr_estimator", ESTIMATORS)
  checks.check_positive_int(out.jr_num_projections, "config.reg.jr_num_projections")
  checks.check_choice(out.at_norm, "config.reg.at_norm", AT_NORMS)
  checks.check_positive_int(out.at_steps, "config.reg.at_steps")
  step_size = out.at_step_size
  if step_size is not None:
    step_size = _check_nonneg(step_size, "config.reg.at_step_size") or None
  out = out._replace(
      weight_decay=_check_nonneg(out.weight_decay, "config.reg.weight_decay"),
      jr_lambda=_check_nonneg(out.jr_lambda, "config.reg.jr_lambda"),
      igr_lambda=_check_nonneg(out.igr_lambda, "config.reg.igr_lambda"),
      at_eps=_check_nonneg(out.at_eps, "config.reg.at_eps"),
      at_weight=_check_nonneg(out.at_weight, "config.reg.at_weight"),
      at_step_size=step_size,
      jr_per_example=_check_bool(out.jr_per_example, "config.reg.jr_per_example"),
      at_random_start=_check_bool(out.at_random_start, "config.reg.at_random_start"),
  )
  if out.at_norm != "none":
    if out.at_eps <= 0:
      raise ValueError(f"`config.reg.at_eps` must be > 0 with at_norm={out.at_norm!r}.")
    if not 0 < out.at_weight <= 1:
      raise ValueError(f"`config.reg.at_weight` must be in (0, 1], got {out.at_weight}.")
  return out


# ----------------------------------------------------------------------------- state


class TrainState(train_state.TrainState):
  """Flax ``TrainState``: ``step``, ``params``, ``opt_state``; static
  ``apply_fn`` (``model.apply``) and ``tx``.

  ``state.apply_fn({"params": state.params}, x)`` gives evaluation-mode
  logits: the ``(apply_fn, params)`` pair of every ``jaxjac`` function.
  :meth:`create` stores ``step`` as an int32 array (not a Python int), so the
  jitted step sees the same input types at every call and compiles once.
  """

  @classmethod
  def create(cls, *, apply_fn, params, tx, **kwargs) -> TrainState:
    state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
    return state.replace(step=jnp.zeros((), jnp.int32))


def make_optimizer(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int
) -> optax.GradientTransformation:
  """The optax optimizer of ``config.optimizer``, learning rate injected.

  The rate is ``learning_rate * quench_factor ** k`` after the ``k``-th
  epoch boundary in ``quench_epochs`` (epochs may be fractional; converted to
  steps with ``steps_per_epoch``). It is wrapped in
  ``optax.inject_hyperparams``, so ``opt_state.hyperparams["learning_rate"]``
  holds the rate of the last update.
  """
  opt = config.optimizer
  checks.check_choice(opt.name, "config.optimizer.name", OPTIMIZERS)
  checks.check_positive_int(steps_per_epoch, "steps_per_epoch")
  lr = _check_nonneg(opt.learning_rate, "config.optimizer.learning_rate")
  if lr == 0:
    raise ValueError("`config.optimizer.learning_rate` must be > 0, got 0.")
  factor = _check_nonneg(opt.quench_factor, "config.optimizer.quench_factor")
  quench = tuple(opt.quench_epochs)
  for e in quench:
    _check_nonneg(e, "config.optimizer.quench_epochs[i]")
  if list(quench) != sorted(quench):
    raise ValueError(f"`config.optimizer.quench_epochs` must be increasing, got {quench}.")
  boundaries: dict[int, float] = {}
  for e in quench:
    step = int(round(e * steps_per_epoch))
    boundaries[step] = boundaries.get(step, 1.0) * factor
  schedule = optax.piecewise_constant_schedule(lr, boundaries) if boundaries else lr
  if opt.name == "sgd":
    momentum = _check_nonneg(opt.momentum, "config.optimizer.momentum")
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=schedule,
        momentum=momentum or None,
        nesterov=_check_bool(opt.nesterov, "config.optimizer.nesterov"),
    )
  return optax.inject_hyperparams(optax.adam)(learning_rate=schedule)


def make_model(config: ml_collections.ConfigDict):
  """The Flax module of ``config.model`` (see :func:`jaxjac.models.get_model`)."""
  kwargs = dict(config.model)
  name = kwargs.pop("name")
  return models_lib.get_model(name, **kwargs)


def create_train_state(
    config: ml_collections.ConfigDict,
    *,
    key: jax.Array,
    steps_per_epoch: int,
    input_shape: tuple[int, ...] = (1, 28, 28, 1),
) -> TrainState:
  """A fresh :class:`TrainState`: the model initialized with `key`, step 0."""
  checks.check_key(key, needed_by="create_train_state")
  model = make_model(config)
  params = model.init(key, jnp.zeros(input_shape, jnp.float32))["params"]
  tx = make_optimizer(config, steps_per_epoch=steps_per_epoch)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


# ----------------------------------------------------------------------------- step


def step_keys(key: jax.Array, step: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The keys of one step: ``split(fold_in(key, step), 3)`` -> (dropout, jr, attack)."""
  keys = jax.random.split(jax.random.fold_in(key, step), 3)
  return keys[0], keys[1], keys[2]


def l2_penalty(params: Any) -> jax.Array:
  """``||theta||_2^2``, the sum of squares of every parameter."""
  return sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))


def _train_step(
    state: TrainState, batch: Batch, key: jax.Array, *, reg: Regularizer
) -> tuple[TrainState, Metrics]:
  x, y = batch
  k_dropout, k_jr, k_at = step_keys(key, state.step)

  def train_apply(variables, xb):
    return state.apply_fn(variables, xb, train=True, rngs={"dropout": k_dropout})

  x_adv = None
  if reg.at_norm != "none":
    from jaxjac._src import attacks  # noqa: PLC0415 (optional at import time)

    x_adv = attacks.pgd(
        state.apply_fn,
        {"params": state.params},
        x,
        y,
        eps=reg.at_eps,
        norm=reg.at_norm,
        steps=reg.at_steps,
        step_size=reg.at_step_size,
        key=k_at,
        random_start=reg.at_random_start,
        select="loss",
    )

  def objective(params):
    variables = {"params": params}
    logits = train_apply(variables, x)
    ce = jnp.mean(softmax_cross_entropy(logits, y))
    aux = {"ce": ce, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    loss = ce
    if x_adv is not None:
      adv_logits = train_apply(variables, x_adv)
      adv_ce = jnp.mean(softmax_cross_entropy(adv_logits, y))
      aux["adv_ce"] = adv_ce
      aux["adv_accuracy"] = jnp.mean(jnp.argmax(adv_logits, -1) == y)
      loss = (1.0 - reg.at_weight) * ce + reg.at_weight * adv_ce
    if reg.jr_lambda > 0:
      penalty = jacobian_penalty(
          train_apply,
          variables,
          x,
          key=k_jr,
          norm=reg.jr_norm,
          estimator=reg.jr_estimator,
          num_projections=reg.jr_num_projections,
          per_example=reg.jr_per_example,
      )
      aux["penalty"] = penalty
      loss = loss + (reg.jr_lambda / 2) * penalty
    if reg.igr_lambda > 0:
      _, grads_x = input_gradient(softmax_cross_entropy, train_apply, variables, x, y)
      igr = jnp.mean(jnp.sum(jnp.square(grads_x.reshape(x.shape[0], -1)), axis=-1))
      aux["igr"] = igr
      loss = loss + (reg.igr_lambda / 2) * igr
    if reg.weight_decay > 0:
      l2 = 0.5 * reg.weight_decay * l2_penalty(params)
      aux["l2"] = l2
      loss = loss + l2
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


def make_train_step(config: ml_collections.ConfigDict | Regularizer) -> TrainStepFn:
  """The jitted ``train_step(state, batch, key) -> (state, metrics)``.

  The regularizers of ``config.reg`` (or a :class:`Regularizer`) are bound
  with ``functools.partial`` and the step is jitted with the state donated
  (``donate_argnums=0``): do not use the input state after the call. The
  step computes the objective in the module docstring on ``batch = (x, y)``
  (``x`` float images ``(B, 28, 28, 1)``, ``y`` int labels ``(B,)``) with the
  keys :func:`step_keys` ``(key, state.step)``, and returns the updated state
  and scalar metrics of the *pre-update* parameters: ``loss`` (the whole
  objective), ``ce``, ``accuracy`` (training mode, so under dropout),
  ``penalty`` (the raw :func:`jaxjac.jacobian_penalty`, with JR),
  ``igr`` (with IGR), ``l2`` (the term ``(lambda_WD / 2) ||theta||^2``, with
  weight decay), ``adv_ce``/``adv_accuracy`` (with AT), ``grad_norm`` and
  ``lr`` (the rate of this update).

  With dropout, the loss, the Jacobian penalty and the input gradient all see
  the training-mode network with the same dropout masks (one key per step);
  the PGD adversary attacks the evaluation-mode network and carries no
  gradient.

  Example::

    config = jaxjac.training.default_config()
    config.reg.jr_lambda = 0.01
    state = jaxjac.training.create_train_state(config, key=jax.random.key(0),
                                               steps_per_epoch=600)
    train_step = jaxjac.training.make_train_step(config)
    state, metrics = train_step(state, (x, y), jax.random.key(1))  # x: (B, 28, 28, 1)

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
  """
  reg = config if isinstance(config, Regularizer) else regularizer_from_config(config.reg)
  return jax.jit(functools.partial(_train_step, reg=reg), donate_argnums=0)


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnums=0)
def _jacobian_fro(apply_fn, params, x):
  sq = jacobian_penalty_per_example(apply_fn, params, x, norm="frobenius", estimator="exact")
  return jnp.mean(jnp.sqrt(sq))


def jacobian_frobenius_norm(apply_fn, params, x: jax.Array) -> float:
  """Mean per-example ``||J_b||_F`` (exact), the norm Hoffman et al. report.

  .. math::
    \\frac{1}{B} \\sum_b \\|J_b\\|_F, \\qquad J_b = \\partial z_b / \\partial x_b.

  Note that this averages the norm, not its square (the training penalty).
  """
  return float(_jacobian_fro(apply_fn, params, x))


@functools.partial(jax.jit, static_argnums=0)
def _num_correct(apply_fn, params, x, y):
  return jnp.sum(jnp.argmax(apply_fn(params, x), -1) == y)


def accuracy(apply_fn, params, images: np.ndarray, labels: np.ndarray, *, batch_size=1000) -> float:
  """Clean accuracy of ``apply_fn(params, .)`` on ``images``, in batches."""
  checks.check_positive_int(batch_size, "batch_size")
  n = int(labels.shape[0])
  correct = 0
  for lo in range(0, n, batch_size):
    correct += int(_num_correct(apply_fn, params, images[lo : lo + batch_size],
                                labels[lo : lo + batch_size]))
  return correct / n


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


# ----------------------------------------------------------------------------- I/O


class MetricsWriter:
  """Appends JSON records, one a line, to ``path``.

  With ``truncate_after=s`` it first drops the records whose ``step``
  exceeds ``s`` (written after the checkpoint a resumed run restarts from).
  """

  def __init__(self, path: str, *, truncate_after: int | None = None):
    self.path = path
    if truncate_after is not None and os.path.exists(path):
      with open(path) as f:
        kept = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= truncate_after]
      with open(path, "w") as f:
        f.writelines(kept)
    self._file = open(path, "a")  # noqa: SIM115

  def write(self, record: Mapping[str, Any]) -> None:
    self._file.write(json.dumps(_jsonable(record)) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl``, in order."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(ln) for ln in f if ln.strip()]


def _subset(n: int, size: int, *, name: str, seed: int) -> np.ndarray:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
    raise ValueError(f"`{name}` must be an int >= 0 (0: all), got {size!r}.")
  if size > n:
    raise ValueError(f"`{name}`={size} exceeds the {n} examples available.")
  order = np.random.default_rng([seed, 0x5EB5E7]).permutation(n)
  return np.sort(order[: size or n])


def split_indices(config: ml_collections.ConfigDict, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
  """The sorted train and test example indices that :func:`train` uses for `config`.

  ``config.data.train_size`` / ``test_size`` (0: all) pick a fixed random subset
  that depends only on ``config.seed``, so evaluation code can select exactly
  the examples a run was trained and tested on.

  Args:
    config: a training config (see :func:`default_config`).
    dataset: the loaded dataset (``num_train``, ``num_test``), e.g. from
      :func:`jaxjac.data.load_mnist`.

  Returns:
    ``(train_indices, test_indices)``, sorted int arrays.

  Raises:
    ValueError: a size is negative, not an int, or larger than the split.
  """
  tr = _subset(dataset.num_train, config.data.train_size, name="config.data.train_size",
               seed=config.seed)
  te = _subset(dataset.num_test, config.data.test_size, name="config.data.test_size",
               seed=config.seed)
  return tr, te


def _checkpoint_manager(workdir: str, keep: int):
  import orbax.checkpoint as ocp  # noqa: PLC0415 (slow import)

  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                               options=options)


def _save(mngr, state: TrainState) -> None:
  import orbax.checkpoint as ocp  # noqa: PLC0415

  mngr.save(int(state.step), args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()


def restore_checkpoint(workdir: str, state: TrainState, *, step: int | None = None) -> TrainState:
  """The state saved in ``workdir`` at `step` (default: the latest).

  ``state`` gives the structure (a fresh :func:`create_train_state`).
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415

  mngr = _checkpoint_manager(workdir, keep=1_000_000)
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    mngr.close()


def _config_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True, indent=1)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    return out
  return [] if a == b else [prefix[:-1]]


# ----------------------------------------------------------------------------- loop


class TrainResult(NamedTuple):
  """What :func:`train` returns: the final state and a JSON-able summary."""

  state: TrainState
  summary: dict[str, Any]


def _validate(config: ml_collections.ConfigDict) -> None:
  checks.check_positive_int(config.batch_size, "config.batch_size")
  checks.check_positive_int(config.num_epochs, "config.num_epochs")
  for name in ("log_every", "checkpoint_every", "keep_checkpoints", "heldout_size",
               "eval_batch_size"):
    checks.check_positive_int(config[name], f"config.{name}")
  for name in ("num_steps", "heldout_every", "seed"):
    v = config[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      raise ValueError(f"`config.{name}` must be an int >= 0, got {v!r}.")
  regularizer_from_config(config.reg)
  make_model(config)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    resume: bool = False,
    dataset: Any = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
  """Trains the model of `config` and writes metrics and checkpoints to `workdir`.

  ``workdir`` receives ``config.json``, ``metrics.jsonl`` (one JSON record a
  line: ``"kind": "start"``, ``"train"`` every ``log_every`` steps with the
  interval's mean metrics, ``lr`` and ``examples_per_sec``; ``"heldout"``
  with ``heldout_jacobian_fro``, the mean ``||J||_F`` on held-out test
  examples; ``"epoch"`` with the epoch's means and the test accuracy;
  ``"final"``), ``summary.json`` and orbax checkpoints in ``checkpoints/``
  (every ``checkpoint_every`` steps and at the end).

  Every step's metrics are checked: a NaN or inf stops the run with a
  ``FloatingPointError`` naming the metric and the step.

  Args:
    config: see :func:`default_config`.
    workdir: output directory; it must not hold checkpoints unless `resume`.
    resume: continue from the latest checkpoint in `workdir` (if any), with
      the data order, keys and metrics file as if never interrupted. The
      configuration must equal the saved ``config.json``.
    dataset: a :class:`jaxjac.data.Dataset` to use instead of loading
      ``config.data``'s source (``train_size``/``test_size`` still apply).
    on_step: called with the step number after every step (for progress
      hooks and tests).

  Returns:
    A :class:`TrainResult` ``(state, summary)``.

  Raises:
    ValueError: an invalid config, checkpoints in `workdir` without
      `resume`, or a resumed config that differs from the saved one.
    FloatingPointError: a non-finite metric.
  """
  from jaxjac._src import data as data_lib  # noqa: PLC0415

  _validate(config)
  os.makedirs(workdir, exist_ok=True)
  mngr = _checkpoint_manager(workdir, config.keep_checkpoints)
  writer = None
  try:
    latest = mngr.latest_step()
    config_path = os.path.join(workdir, CONFIG_FILE)
    if latest is not None and not resume:
      raise ValueError(
          f"`workdir` {workdir} already holds checkpoints (latest step {latest}); pass "
          "`resume=True` (--resume) to continue, or choose an empty workdir."
      )
    if resume and os.path.exists(config_path):
      with open(config_path) as f:
        saved = json.load(f)
      diff = _diff_keys(saved, json.loads(_config_json(config)))
      if diff:
        raise ValueError(
            f"cannot resume in {workdir}: the config differs from the saved {CONFIG_FILE} "
            f"in {diff}; use the saved config or a new workdir."
        )
    with open(config_path, "w") as f:
      f.write(_config_json(config))

    if dataset is None:
      dataset = data_lib.load_mnist(
          config.data.source,
          data_dir=config.data.data_dir or None,
          dataset=config.data.dataset,
      )
    tr, te = split_indices(config, dataset)
    train_x, train_y = dataset.train_images[tr], dataset.train_labels[tr]
    test_x, test_y = dataset.test_images[te], dataset.test_labels[te]
    if config.heldout_size > test_x.shape[0]:
      raise ValueError(
          f"`config.heldout_size`={config.heldout_size} exceeds the {test_x.shape[0]} test "
          "examples."
      )
    held = np.random.default_rng([config.seed, 0x4E1D]).permutation(test_x.shape[0])
    heldout_x = jnp.asarray(test_x[np.sort(held[: config.heldout_size])])

    spe = data_lib.steps_per_epoch(int(train_x.shape[0]), config.batch_size)
    total = config.num_steps or config.num_epochs * spe
    root = jax.random.key(config.seed)
    init_key, train_key = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
    state = create_train_state(
        config, key=init_key, steps_per_epoch=spe, input_shape=(1, *train_x.shape[1:])
    )
    if resume and latest is not None:
      import orbax.checkpoint as ocp  # noqa: PLC0415

      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      state = mngr.restore(latest, args=ocp.args.StandardRestore(abstract))
    start = int(state.step)
    if start > total:
      raise ValueError(f"the checkpoint is at step {start}, past the run's {total} steps.")
    writer = MetricsWriter(os.path.join(workdir, METRICS_FILE),
                           truncate_after=start if resume else None)

    step_fn = make_train_step(config)
    # Data parallelism (jaxjac.sharding): batch split over the mesh, state replicated.
    mesh = sharding_lib.mesh_for_config(config.get("num_devices", 1), batch_size=config.batch_size)
    if mesh is not None:
      step_fn = sharding_lib.shard_train_step(step_fn, mesh)
      state = sharding_lib.replicate(state, mesh)
    example = (jnp.asarray(train_x[: config.batch_size]), jnp.asarray(train_y[: config.batch_size]))
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, example, train_key).compile()
    compile_s = time.perf_counter() - t0
    eval_params = lambda s: {"params": s.params}
    writer.write({
        "kind": "start", "step": start, "total_steps": total, "steps_per_epoch": spe,
        "num_train": int(train_x.shape[0]), "num_test": int(test_x.shape[0]),
        "data_source": getattr(dataset, "source", "given"), "compile_s": compile_s,
        "resumed": bool(resume and latest is not None),
    })

    def heldout(s: TrainState) -> float:
      return jacobian_frobenius_norm(s.apply_fn, eval_params(s), heldout_x)

    from tqdm.auto import tqdm  # noqa: PLC0415

    bar = tqdm(total=total, initial=start, disable=not config.progress_bar, unit="step")
    pending: list[tuple[int, Metrics]] = []
    epoch_sums: dict[str, float] = {}
    epoch_count = 0
    timer = [time.perf_counter(), 0]  # start, steps since start
    train_time, train_steps = 0.0, 0
    last_train: dict[str, float] = {}

    def flush(step: int) -> None:
      nonlocal epoch_count, train_time, train_steps, last_train
      if not pending:
        return
      fetched = jax.device_get([m for _, m in pending])
      elapsed = time.perf_counter() - timer[0]
      for (s, _), m in zip(pending, fetched, strict=True):
        check_finite(m, step=s)
      means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
      for m in fetched:
        for k, v in m.items():
          epoch_sums[k] = epoch_sums.get(k, 0.0) + float(v)
      epoch_count += len(fetched)
      rate = timer[1] * config.batch_size / elapsed if elapsed > 0 else float("nan")
      train_time += elapsed
      train_steps += timer[1]
      means["lr"] = float(fetched[-1]["lr"])
      last_train = means
      writer.write({"kind": "train", "step": step, "epoch": step / spe, **means,
                    "examples_per_sec": rate})
      bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
      pending.clear()
      timer[0], timer[1] = time.perf_counter(), 0

    def restart_timer() -> None:
      timer[0], timer[1] = time.perf_counter(), 0

    heldout_fro = test_acc = None
    step = start
    while step < total:
      epoch, offset = divmod(step, spe)
      for x, y in data_lib.batches(train_x, train_y, config.batch_size, seed=config.seed,
                                   epoch=epoch, start=offset):
        state, metrics = compiled(state, (x, y), train_key)
        step += 1
        pending.append((step, metrics))
        timer[1] += 1
        bar.update(1)
        end_epoch = step % spe == 0
        if step % config.log_every == 0 or end_epoch or step == total:
          flush(step)
        if (config.heldout_every and step % config.heldout_every == 0) or end_epoch:
          flush(step)
          heldout_fro = heldout(state)
          writer.write({"kind": "heldout", "step": step, "heldout_jacobian_fro": heldout_fro})
          restart_timer()
        if end_epoch:
          test_acc = accuracy(state.apply_fn, eval_params(state), test_x, test_y,
                              batch_size=config.eval_batch_size)
          record = {k: v / epoch_count for k, v in epoch_sums.items()} if epoch_count else {}
          writer.write({"kind": "epoch", "step": step, "epoch": step // spe, **record,
                        "test_accuracy": test_acc, "heldout_jacobian_fro": heldout_fro})
          epoch_sums.clear()
          epoch_count = 0
          restart_timer()
        if step % config.checkpoint_every == 0:
          flush(step)
          _save(mngr, state)
          restart_timer()
        if on_step is not None:
          on_step(step)
        if step >= total:
          break
    flush(step)
    bar.close()
    if mngr.latest_step() != int(state.step):
      _save(mngr, state)
    if heldout_fro is None or step % spe != 0:
      heldout_fro = heldout(state)
      test_acc = accuracy(state.apply_fn, eval_params(state), test_x, test_y,
                          batch_size=config.eval_batch_size)
    summary = {
        "step": int(state.step),
        "total_steps": total,
        "epochs": int(state.step) / spe,
        "test_accuracy": test_acc,
        "heldout_jacobian_fro": heldout_fro,
        "train": last_train,
        "compile_s": compile_s,
        "examples_per_sec": train_steps * config.batch_size / train_time if train_time else None,
        "data_source": getattr(dataset, "source", "given"),
        "num_train": int(train_x.shape[0]),
        "num_test": int(test_x.shape[0]),
    }
    writer.write({"kind": "final", **summary})
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(_jsonable(summary), f, indent=1)
    return TrainResult(state, summary)
  finally:
    if writer is not None:
      writer.close()
    mngr.close()
