"""Adversarial attacks: jitted FGSM, PGD, APGD, APGD-T, FAB-T and Square for l_inf and l_2 balls.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxjac import attacks
  >>> logits_fn = lambda w, x: x @ w  # three classes, z = x
  >>> x, y = jnp.full((2, 3), 0.5), jnp.array([0, 1])
  >>> x_adv = attacks.pgd(logits_fn, jnp.eye(3), x, y, eps=0.3, norm="linf", steps=40,
  ...                     key=jax.random.key(0))
  >>> jnp.argmax(logits_fn(jnp.eye(3), x_adv), axis=1) != y  # both broken
  Array([ True,  True], dtype=bool)

The losses, the norm geometry, how the returned point is chosen and the
checked mode under ``jax.jit`` are described in the modules of
``jaxjac._src.attacks``; :func:`jaxjac.evaluate` runs a full robustness
evaluation (its specs and suites are in :mod:`jaxjac.robustness`).

References:
  Madry et al. arXiv:1706.06083, 2017. Croce, Hein. arXiv:2003.01690, 2020.
  Croce, Hein. arXiv:1907.02044, 2019 (FAB). Andriushchenko et al. arXiv:1912.00049, 2020
  (Square).
"""

from jaxjac._src.attacks import LOSSES as LOSSES
from jaxjac._src.attacks import METHODS as METHODS
from jaxjac._src.attacks import NORMS as NORMS
from jaxjac._src.attacks import SELECTS as SELECTS
from jaxjac._src.attacks import AttackConfig as AttackConfig
from jaxjac._src.attacks import apgd as apgd
from jaxjac._src.attacks import apgd_targeted as apgd_targeted
from jaxjac._src.attacks import attack_loss as attack_loss
from jaxjac._src.attacks import fab as fab
from jaxjac._src.attacks import fgsm as fgsm
from jaxjac._src.attacks import perturbation_norm as perturbation_norm
from jaxjac._src.attacks import pgd as pgd
from jaxjac._src.attacks import square as square

__all__ = (
  "AttackConfig",
  "LOSSES",
  "METHODS",
  "NORMS",
  "SELECTS",
  "apgd",
  "apgd_targeted",
  "attack_loss",
  "fab",
  "fgsm",
  "perturbation_norm",
  "pgd",
  "square",
)
