"""Training configuration: the default config tree, its variants and its validation.

One :func:`default_config` tree describes a run: the model, the data subset,
the optimizer, the regularizers (``config.reg``, bound into the step as a
:class:`Regularizer`), the data term (``config.loss``, a :class:`LossSpec`)
and the logging and checkpoint cadence. ``get_config(arg)`` of a config file
derives from it; :func:`config_variant` turns ``arg="tiny"`` into the
seconds-long :func:`tiny` variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from jaxjac._src import checks
from jaxjac._src.jacobian import ESTIMATORS

OPTIMIZERS = ("sgd", "adam")
JR_NORMS = ("frobenius", "l11")
AT_NORMS = ("none", "linf", "l2")
LOSSES = ("ce", "first_order", "surrogate")
VARIANTS = ("", "tiny")


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
  * ``loss``: the data term. ``name``: ``"ce"`` (softmax cross-entropy),
    ``"first_order"`` (:func:`jaxjac.first_order_robust_loss`) or
    ``"surrogate"`` (:func:`jaxjac.jacobian_surrogate_loss`, Wu and Li's
    Jacobian surrogate of the robust loss), with the attack radius ``eps``,
    its norm ``p`` (``2.0`` or ``float("inf")``) and the surrogate's Jacobian
    ``estimator`` (``"exact"``; the random ones use the step's JR key).
  * ``reg``: ``weight_decay`` (``lambda_WD``), ``jr_lambda`` with
    ``jr_norm``/``jr_estimator``/``jr_num_projections``/``jr_mixes_batch``,
    the amortized-JR options ``jr_fraction`` (the penalty on a random
    ``jr_fraction`` of each batch) and ``jr_every`` (the penalty every
    ``jr_every`` steps, weighted by ``jr_every``), ``igr_lambda``, and PGD
    adversarial training: ``at_norm`` (``"none"``, ``"linf"``, ``"l2"``),
    ``at_eps``, ``at_steps``, ``at_step_size`` (``0``: ``2.5 eps / steps``),
    ``at_weight`` (1 is Madry et al.), ``at_random_start``.
  * Logging: ``log_every`` steps (a JSON line with the interval's means),
    ``heldout_every`` steps (mean ``||J||_F`` on ``heldout_size`` test
    examples; also at every epoch end), ``eval_batch_size``,
    ``progress_bar``.
  * Checkpoints: ``checkpoint_every`` steps and at the end, keeping
    ``keep_checkpoints``.
  * ``num_devices``: data parallelism (:mod:`jaxjac.sharding`): ``1`` one
    device (no mesh), ``0`` all devices (of all processes), ``n`` the first
    ``n``; the batch is split over them (``batch_size`` must be a multiple)
    and the parameters replicated.

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
  c.loss = ml_collections.ConfigDict({"name": "ce", "eps": 0.0, "p": 2.0, "estimator": "exact"})
  c.reg = ml_collections.ConfigDict(Regularizer()._replace(at_step_size=0.0)._asdict())
  logging = {"log_every": 50, "heldout_every": 600, "heldout_size": 100, "eval_batch_size": 1000}
  c.update(logging, checkpoint_every=1000, keep_checkpoints=3, progress_bar=True, num_devices=1)
  return c


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` shrunk to run end to end in seconds on a CPU.

  A one-hidden-layer MLP (32 units) instead of the model, 512 training and
  256 test examples, batch 32, 24 steps without quenches, 3 PGD steps, logs,
  held-out norms and checkpoints every 8 steps, no progress bar. The
  regularizers, the loss and their strengths are kept.
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
  c.update({"log_every": 8, "heldout_every": 8, "heldout_size": 32, "eval_batch_size": 256})
  c.update(checkpoint_every=8, progress_bar=False)
  return c


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
    jr_mixes_batch: see :func:`jaxjac.jacobian_penalty`.
    jr_fraction: sub-batch JR: the penalty is the mean over a uniformly
      random subset (without replacement) of ``max(1, round(jr_fraction *
      B))`` examples of the batch, an unbiased estimate of the batch mean.
      ``1``: the whole batch. In ``(0, 1]``.
    jr_every: lazy JR: the penalty term is added at the steps ``s`` with
      ``s % jr_every == 0`` only, with weight ``jr_every * lambda_JR / 2``,
      so that its mean over ``jr_every`` steps is the full term (Karras et
      al. 2020's lazy regularization). ``1``: every step.
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
  jr_mixes_batch: bool = False
  jr_fraction: float = 1.0
  jr_every: int = 1
  igr_lambda: float = 0.0
  at_norm: str = "none"
  at_eps: float = 0.3
  at_steps: int = 10
  at_step_size: float | None = None
  at_weight: float = 1.0
  at_random_start: bool = True


class LossSpec(NamedTuple):
  """Static configuration of the data term of the train step (``config.loss``).

  Attributes:
    name: ``"ce"``, ``"first_order"`` or ``"surrogate"``.
    eps: attack radius of the robust losses, ``>= 0``.
    p: attack norm of the robust losses, ``2.0`` or ``math.inf``.
    estimator: Jacobian estimator of the surrogate.
  """

  name: str = "ce"
  eps: float = 0.0
  p: float = 2.0
  estimator: str = "exact"


def check_nonneg(value: Any, name: str) -> float:
  """`value` as a float if it is a finite number >= 0, else a clear error naming `name`."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"`{name}` must be a number >= 0, got {value!r}.")
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
  return float(value)


def check_bool(value: Any, name: str) -> bool:
  """`value` if it is a bool, else a TypeError naming `name`."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be True or False, got {value!r}.")
  return bool(value)


def _known_fields(given: Mapping[str, Any], fields: tuple[str, ...], name: str) -> dict:
  given = dict(given)
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise ValueError(f"`{name}` has unknown field(s) {unknown}; known: {list(fields)}.")
  return given


def regularizer_from_config(reg: Mapping[str, Any]) -> Regularizer:
  """Validates ``config.reg`` and returns the :class:`Regularizer` it describes.

  Raises:
    ValueError: an unknown field, an unknown choice, a negative strength,
      ``jr_fraction`` outside ``(0, 1]``, ``at_eps <= 0`` or ``at_weight``
      outside ``(0, 1]`` with adversarial training on.
    TypeError: a field of the wrong type.
  """
  out = Regularizer()._replace(**_known_fields(reg, Regularizer._fields, "config.reg"))
  checks.check_choice(out.jr_norm, "config.reg.jr_norm", JR_NORMS)
  checks.check_choice(out.jr_estimator, "config.reg.jr_estimator", ESTIMATORS)
  checks.check_positive_int(out.jr_num_projections, "config.reg.jr_num_projections")
  checks.check_positive_int(out.jr_every, "config.reg.jr_every")
  checks.check_choice(out.at_norm, "config.reg.at_norm", AT_NORMS)
  checks.check_positive_int(out.at_steps, "config.reg.at_steps")
  step_size = out.at_step_size
  if step_size is not None:
    step_size = check_nonneg(step_size, "config.reg.at_step_size") or None
  out = out._replace(
    weight_decay=check_nonneg(out.weight_decay, "config.reg.weight_decay"),
    jr_lambda=check_nonneg(out.jr_lambda, "config.reg.jr_lambda"),
    jr_fraction=check_nonneg(out.jr_fraction, "config.reg.jr_fraction"),
    jr_every=int(out.jr_every),
    igr_lambda=check_nonneg(out.igr_lambda, "config.reg.igr_lambda"),
    at_eps=check_nonneg(out.at_eps, "config.reg.at_eps"),
    at_weight=check_nonneg(out.at_weight, "config.reg.at_weight"),
    at_step_size=step_size,
    jr_mixes_batch=check_bool(out.jr_mixes_batch, "config.reg.jr_mixes_batch"),
    at_random_start=check_bool(out.at_random_start, "config.reg.at_random_start"),
  )
  if not 0 < out.jr_fraction <= 1:
    raise ValueError(f"`config.reg.jr_fraction` must be in (0, 1], got {out.jr_fraction}.")
  if out.at_norm != "none":
    if out.at_eps <= 0:
      raise ValueError(f"`config.reg.at_eps` must be > 0 with at_norm={out.at_norm!r}.")
    if not 0 < out.at_weight <= 1:
      raise ValueError(f"`config.reg.at_weight` must be in (0, 1], got {out.at_weight}.")
  return out


def loss_from_config(loss: Mapping[str, Any] | None) -> LossSpec:
  """Validates ``config.loss`` (``None``: cross-entropy) and returns its :class:`LossSpec`.

  Raises:
    ValueError: an unknown field or name, a negative or non-finite ``eps``, a
      ``p`` other than 2 or inf, or an unknown estimator.
  """
  out = LossSpec()._replace(**_known_fields(loss or {}, LossSpec._fields, "config.loss"))
  checks.check_choice(out.name, "config.loss.name", LOSSES)
  checks.check_choice(out.estimator, "config.loss.estimator", ESTIMATORS)
  try:
    p = checks.canonical_p(out.p)
  except ValueError:
    raise ValueError(f"`config.loss.p` must be 2.0 or inf, got {out.p!r}.") from None
  return out._replace(eps=check_nonneg(out.eps, "config.loss.eps"), p=p)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every field of a training config; raises a clear error naming the bad one."""
  from jaxjac._src.datasets import DATASETS  # noqa: PLC0415
  from jaxjac._src.sources import SOURCES  # noqa: PLC0415
  from jaxjac._src.training.state import make_model, make_optimizer  # noqa: PLC0415 (cycle)

  checks.check_positive_int(config.batch_size, "config.batch_size")
  checks.check_positive_int(config.num_epochs, "config.num_epochs")
  for name in (
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "heldout_size",
    "eval_batch_size",
  ):
    checks.check_positive_int(config[name], f"config.{name}")
  for name in ("num_steps", "heldout_every", "seed"):
    v = config[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      raise ValueError(f"`config.{name}` must be an int >= 0, got {v!r}.")
  regularizer_from_config(config.reg)
  loss_from_config(config.get("loss"))
  make_optimizer(config, steps_per_epoch=1)
  checks.check_choice(config.data.source, "config.data.source", SOURCES)
  checks.check_choice(config.data.dataset, "config.data.dataset", DATASETS)
  rate = config.model.get("dropout_rate", 0.0)
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"`config.model.dropout_rate` must be a float in [0, 1), got {rate!r}.")
  make_model(config)
