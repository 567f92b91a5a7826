"""Robustness evaluation, one concept per module.

* :mod:`.specs`: attack specifications and the suites;
* :mod:`.registry`: how each method is run (FAB-T and Square imported lazily);
* :mod:`.sanity`: the gradient-masking and AutoAttack checks;
* :mod:`.evaluation`: :func:`evaluate` (scheduling, batching, summary).
"""

from jaxjac._src.robustness.evaluation import evaluate as evaluate
from jaxjac._src.robustness.sanity import GradientMaskingWarning as GradientMaskingWarning
from jaxjac._src.robustness.sanity import model_checks as model_checks
from jaxjac._src.robustness.sanity import sanity_report as sanity_report
from jaxjac._src.robustness.specs import METHODS as METHODS
from jaxjac._src.robustness.specs import SUITES as SUITES
from jaxjac._src.robustness.specs import AttackSpec as AttackSpec
from jaxjac._src.robustness.specs import fast_attacks as fast_attacks
from jaxjac._src.robustness.specs import standard_attacks as standard_attacks
