"""The train state: model, optimizer and a Flax ``TrainState`` with an array step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax.training import train_state

from jaxjac._src import checks
from jaxjac._src import models as models_lib
from jaxjac._src.training.config import OPTIMIZERS, check_bool, check_nonneg


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
  lr = check_nonneg(opt.learning_rate, "config.optimizer.learning_rate")
  if lr == 0:
    raise ValueError("`config.optimizer.learning_rate` must be > 0, got 0.")
  factor = check_nonneg(opt.quench_factor, "config.optimizer.quench_factor")
  quench = tuple(opt.quench_epochs)
  for e in quench:
    check_nonneg(e, "config.optimizer.quench_epochs[i]")
  if list(quench) != sorted(quench):
    raise ValueError(f"`config.optimizer.quench_epochs` must be increasing, got {quench}.")
  boundaries: dict[int, float] = {}
  for e in quench:
    step = int(round(e * steps_per_epoch))
    boundaries[step] = boundaries.get(step, 1.0) * factor
  schedule = optax.piecewise_constant_schedule(lr, boundaries) if boundaries else lr
  if opt.name == "sgd":
    momentum = check_nonneg(opt.momentum, "config.optimizer.momentum")
    return optax.inject_hyperparams(optax.sgd)(
      learning_rate=schedule,
      momentum=momentum or None,
      nesterov=check_bool(opt.nesterov, "config.optimizer.nesterov"),
    )
  return optax.inject_hyperparams(optax.adam)(learning_rate=schedule)


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The Flax module of ``config.model`` (see :func:`jaxjac.models.get_model`)."""
  kwargs = dict(config.model)
  name = kwargs.pop("name")
  checks.check_choice(name, "config.model.name", models_lib.MODELS)
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
