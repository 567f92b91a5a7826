"""Training, one concept a module.

* :mod:`.config`: the config tree (:func:`default_config`, :func:`tiny`,
  :func:`config_variant`), its validation and the static :class:`Regularizer`
  and :class:`LossSpec` bound into the step.
* :mod:`.state`: :class:`TrainState`, the model and the optimizer.
* :mod:`.step`: :func:`make_train_step`, the objective with its pluggable
  data term and amortized Jacobian regularization.
* :mod:`.metrics_log`: ``metrics.jsonl`` and the :class:`MetricsLogger`.
* :mod:`.checkpoint`: checksummed checkpoints with fallback, ``config.json``.
* :mod:`.loop`: :func:`train` (``train_and_evaluate``).

The evaluation metrics (accuracy, mean ``||J||_F``, the JSON converter) are
shared with the experiments in :mod:`jaxjac._src.metrics`.
"""

from jaxjac._src.metrics import accuracy as accuracy
from jaxjac._src.metrics import jacobian_frobenius_norm as jacobian_frobenius_norm
from jaxjac._src.metrics import to_jsonable as to_jsonable
from jaxjac._src.training.checkpoint import CONFIG_FILE as CONFIG_FILE
from jaxjac._src.training.checkpoint import CheckpointError as CheckpointError
from jaxjac._src.training.checkpoint import restore_checkpoint as restore_checkpoint
from jaxjac._src.training.config import AT_NORMS as AT_NORMS
from jaxjac._src.training.config import JR_NORMS as JR_NORMS
from jaxjac._src.training.config import LOSSES as LOSSES
from jaxjac._src.training.config import OPTIMIZERS as OPTIMIZERS
from jaxjac._src.training.config import VARIANTS as VARIANTS
from jaxjac._src.training.config import LossSpec as LossSpec
from jaxjac._src.training.config import Regularizer as Regularizer
from jaxjac._src.training.config import config_variant as config_variant
from jaxjac._src.training.config import default_config as default_config
from jaxjac._src.training.config import loss_from_config as loss_from_config
from jaxjac._src.training.config import regularizer_from_config as regularizer_from_config
from jaxjac._src.training.config import tiny as tiny
from jaxjac._src.training.config import validate_config as validate_config
from jaxjac._src.training.loop import TrainingInterrupted as TrainingInterrupted
from jaxjac._src.training.loop import TrainResult as TrainResult
from jaxjac._src.training.loop import split_indices as split_indices
from jaxjac._src.training.loop import train as train
from jaxjac._src.training.metrics_log import METRICS_FILE as METRICS_FILE
from jaxjac._src.training.metrics_log import MetricsLogger as MetricsLogger
from jaxjac._src.training.metrics_log import MetricsWriter as MetricsWriter
from jaxjac._src.training.metrics_log import read_metrics as read_metrics
from jaxjac._src.training.state import TrainState as TrainState
from jaxjac._src.training.state import create_train_state as create_train_state
from jaxjac._src.training.state import make_model as make_model
from jaxjac._src.training.state import make_optimizer as make_optimizer
from jaxjac._src.training.step import LazyTrainStep as LazyTrainStep
from jaxjac._src.training.step import check_finite as check_finite
from jaxjac._src.training.step import cross_entropy_loss as cross_entropy_loss
from jaxjac._src.training.step import l2_penalty as l2_penalty
from jaxjac._src.training.step import make_train_step as make_train_step
from jaxjac._src.training.step import robust_loss as robust_loss
from jaxjac._src.training.step import step_keys as step_keys

train_and_evaluate = train
