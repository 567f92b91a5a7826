"""The pieces of a robustness evaluation: attack specs, suites and sanity checks.

:func:`jaxjac.evaluate` runs an evaluation; this module holds what it is
configured with and what it reports:

* :class:`AttackSpec`: one attack and its radii (PGD's step is
  ``relative_step`` times the radius here, unlike the absolute
  ``step_size`` of :func:`jaxjac.attacks.pgd`);
* the suites (:data:`SUITES`): ``"standard"`` = :func:`standard_attacks`,
  AutoAttack's APGD-CE, APGD-T, FAB-T and Square as a cascade, and
  ``"fast"`` = :func:`fast_attacks`, FGSM, PGD and APGD each on all examples;
* :func:`sanity_report`, :func:`model_checks` and
  :class:`GradientMaskingWarning`: the gradient-masking checks.

Example:
  >>> from jaxjac.robustness import AttackSpec, standard_attacks
  >>> [s.name for s in standard_attacks(linf_eps=(0.3,), l2_eps=())]
  ['apgd-ce-linf', 'apgd-t-linf', 'fab-t-linf', 'square-linf']
  >>> AttackSpec("pgd-linf", "pgd", "linf", (0.1, 0.3), steps=40, relative_step=0.1).relative_step
  0.1

References:
  Croce, Hein. arXiv:2003.01690, 2020. Carlini et al. arXiv:1902.06705, 2019.
"""

from jaxjac._src.robustness import METHODS as METHODS
from jaxjac._src.robustness import SUITES as SUITES
from jaxjac._src.robustness import AttackSpec as AttackSpec
from jaxjac._src.robustness import GradientMaskingWarning as GradientMaskingWarning
from jaxjac._src.robustness import fast_attacks as fast_attacks
from jaxjac._src.robustness import model_checks as model_checks
from jaxjac._src.robustness import sanity_report as sanity_report
from jaxjac._src.robustness import standard_attacks as standard_attacks

__all__ = (
  "AttackSpec",
  "GradientMaskingWarning",
  "METHODS",
  "SUITES",
  "fast_attacks",
  "model_checks",
  "sanity_report",
  "standard_attacks",
)
