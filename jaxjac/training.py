"""Training: one jitted, donated ``train_step`` over a Flax ``TrainState`` and a
resumable loop with JSON-lines metrics, a NaN/inf guard and checksummed orbax
checkpoints.

Regularizers (bound into the step before ``jax.jit``): L2 weight decay,
dropout (in the model), Jacobian regularization (Hoffman et al. 2019,
arXiv:1908.02729), amortized by a sub-batch (``reg.jr_fraction``) or lazily
(``reg.jr_every``), input-gradient regularization (double backpropagation)
and PGD adversarial training, alone or combined. The data term is the
cross-entropy, Wu and Li's robust losses (``loss.name``, arXiv:2412.12449) or
any ``loss_fn`` passed to :func:`make_train_step`.

Run from the command line::

  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr
"""

from jaxjac._src.training import AT_NORMS as AT_NORMS
from jaxjac._src.training import JR_NORMS as JR_NORMS
from jaxjac._src.training import LOSSES as LOSSES
from jaxjac._src.training import OPTIMIZERS as OPTIMIZERS
from jaxjac._src.training import CheckpointError as CheckpointError
from jaxjac._src.training import LazyTrainStep as LazyTrainStep
from jaxjac._src.training import LossSpec as LossSpec
from jaxjac._src.training import MetricsLogger as MetricsLogger
from jaxjac._src.training import MetricsWriter as MetricsWriter
from jaxjac._src.training import Regularizer as Regularizer
from jaxjac._src.training import TrainingInterrupted as TrainingInterrupted
from jaxjac._src.training import TrainResult as TrainResult
from jaxjac._src.training import TrainState as TrainState
from jaxjac._src.training import accuracy as accuracy
from jaxjac._src.training import check_finite as check_finite
from jaxjac._src.training import config_variant as config_variant
from jaxjac._src.training import create_train_state as create_train_state
from jaxjac._src.training import cross_entropy_loss as cross_entropy_loss
from jaxjac._src.training import default_config as default_config
from jaxjac._src.training import jacobian_frobenius_norm as jacobian_frobenius_norm
from jaxjac._src.training import l2_penalty as l2_penalty
from jaxjac._src.training import loss_from_config as loss_from_config
from jaxjac._src.training import make_model as make_model
from jaxjac._src.training import make_optimizer as make_optimizer
from jaxjac._src.training import make_train_step as make_train_step
from jaxjac._src.training import read_metrics as read_metrics
from jaxjac._src.training import regularizer_from_config as regularizer_from_config
from jaxjac._src.training import restore_checkpoint as restore_checkpoint
from jaxjac._src.training import robust_loss as robust_loss
from jaxjac._src.training import split_indices as split_indices
from jaxjac._src.training import step_keys as step_keys
from jaxjac._src.training import tiny as tiny
from jaxjac._src.training import to_jsonable as to_jsonable
from jaxjac._src.training import train as train
from jaxjac._src.training import train_and_evaluate as train_and_evaluate
from jaxjac._src.training import validate_config as validate_config

__all__ = (
  "AT_NORMS",
  "JR_NORMS",
  "LOSSES",
  "OPTIMIZERS",
  "CheckpointError",
  "LazyTrainStep",
  "LossSpec",
  "MetricsLogger",
  "MetricsWriter",
  "Regularizer",
  "TrainResult",
  "TrainState",
  "TrainingInterrupted",
  "accuracy",
  "check_finite",
  "config_variant",
  "create_train_state",
  "cross_entropy_loss",
  "default_config",
  "jacobian_frobenius_norm",
  "l2_penalty",
  "loss_from_config",
  "make_model",
  "make_optimizer",
  "make_train_step",
  "read_metrics",
  "regularizer_from_config",
  "restore_checkpoint",
  "robust_loss",
  "split_indices",
  "step_keys",
  "tiny",
  "to_jsonable",
  "train",
  "train_and_evaluate",
  "validate_config",
)
