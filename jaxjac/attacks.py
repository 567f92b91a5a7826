"""Adversarial attacks: jitted FGSM, PGD and APGD for l_inf and l_2 balls.

Example:
  >>> import jax, jaxjac
  >>> x_adv = jaxjac.attacks.pgd(model.apply, variables, x, y, eps=0.3, norm="linf",
  ...                            steps=40, key=jax.random.key(0))

See :mod:`jaxjac._src.attacks` for the losses, the projections and how the
returned point is chosen, and :func:`jaxjac.evaluate` for a full robustness
report.

References:
  Madry et al. arXiv:1706.06083, 2017. Croce, Hein. arXiv:2003.01690, 2020.
"""

from jaxjac._src.attacks import LOSSES as LOSSES
from jaxjac._src.attacks import METHODS as METHODS
from jaxjac._src.attacks import NORMS as NORMS
from jaxjac._src.attacks import SELECTS as SELECTS
from jaxjac._src.attacks import AttackConfig as AttackConfig
from jaxjac._src.attacks import apgd as apgd
from jaxjac._src.attacks import attack_loss as attack_loss
from jaxjac._src.attacks import fgsm as fgsm
from jaxjac._src.attacks import perturbation_norm as perturbation_norm
from jaxjac._src.attacks import pgd as pgd
from jaxjac._src.evaluate import AttackSpec as AttackSpec
from jaxjac._src.evaluate import GradientMaskingWarning as GradientMaskingWarning
from jaxjac._src.evaluate import default_attacks as default_attacks
from jaxjac._src.evaluate import evaluate as evaluate
from jaxjac._src.evaluate import sanity_report as sanity_report

__all__ = (
  "AttackConfig",
  "AttackSpec",
  "GradientMaskingWarning",
  "LOSSES",
  "METHODS",
  "NORMS",
  "SELECTS",
  "apgd",
  "attack_loss",
  "default_attacks",
  "evaluate",
  "fgsm",
  "perturbation_norm",
  "pgd",
  "sanity_report",
)
