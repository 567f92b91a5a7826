"""jaxjac: Jacobian regularization for robust learning in JAX.

The flat public API. Private modules live in ``jaxjac._src``; import from
``jaxjac`` (and its public submodules) only.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
  Wu, Li. Adversarially robust generalization theory via Jacobian
  regularization. arXiv:2412.12449, 2024.
"""

from jaxjac import attacks as attacks
from jaxjac import data as data
from jaxjac import models as models
from jaxjac import precision as precision
from jaxjac import robustness as robustness
from jaxjac import sharding as sharding
from jaxjac import training as training
from jaxjac._src.estimators import frobenius_fd as frobenius_fd
from jaxjac._src.estimators import frobenius_jvp as frobenius_jvp
from jaxjac._src.estimators import frobenius_projection as frobenius_projection
from jaxjac._src.estimators import l11_jvp as l11_jvp
from jaxjac._src.estimators import l11_projection as l11_projection
from jaxjac._src.estimators import spectral_power as spectral_power
from jaxjac._src.jacobian import ESTIMATORS as ESTIMATORS
from jaxjac._src.jacobian import EXACT_METHODS as EXACT_METHODS
from jaxjac._src.jacobian import JACOBIAN_NORMS as JACOBIAN_NORMS
from jaxjac._src.jacobian import ApplyFn as ApplyFn
from jaxjac._src.jacobian import frobenius_exact as frobenius_exact
from jaxjac._src.jacobian import jacobian as jacobian
from jaxjac._src.jacobian import l11_exact as l11_exact
from jaxjac._src.penalty import PENALTY_ESTIMATORS as PENALTY_ESTIMATORS
from jaxjac._src.penalty import REDUCTIONS as REDUCTIONS
from jaxjac._src.penalty import jacobian_penalty as jacobian_penalty
from jaxjac._src.penalty import penalty_and_logits as penalty_and_logits
from jaxjac._src.robustness import evaluate as evaluate
from jaxjac._src.surrogates import CE_GRAD_BOUND as CE_GRAD_BOUND
from jaxjac._src.surrogates import first_order_robust_loss as first_order_robust_loss
from jaxjac._src.surrogates import input_gradient as input_gradient
from jaxjac._src.surrogates import jacobian_surrogate_loss as jacobian_surrogate_loss
from jaxjac._src.surrogates import softmax_cross_entropy as softmax_cross_entropy

__version__ = "0.1.0"

__all__ = (
  "ApplyFn",
  "CE_GRAD_BOUND",
  "ESTIMATORS",
  "EXACT_METHODS",
  "JACOBIAN_NORMS",
  "PENALTY_ESTIMATORS",
  "REDUCTIONS",
  "attacks",
  "data",
  "evaluate",
  "first_order_robust_loss",
  "frobenius_exact",
  "frobenius_fd",
  "frobenius_jvp",
  "frobenius_projection",
  "input_gradient",
  "jacobian",
  "jacobian_penalty",
  "jacobian_surrogate_loss",
  "l11_exact",
  "l11_jvp",
  "l11_projection",
  "models",
  "penalty_and_logits",
  "precision",
  "robustness",
  "sharding",
  "softmax_cross_entropy",
  "spectral_power",
  "training",
)
