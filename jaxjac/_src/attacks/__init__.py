"""Adversarial attacks, one concept per module.

* :mod:`.norms`: the geometry of the l_inf and l_2 balls;
* :mod:`.losses`: the attack objectives and the success criterion;
* :mod:`.core`: the jitted loops (FGSM, PGD, APGD) and how a point is chosen;
* :mod:`.validation`: the one validation path (also used by the evaluation);
* :mod:`.api`: the public gradient-based attacks;
* :mod:`.fab`: FAB-T, the targeted minimum-norm attack;
* :mod:`.square`: Square, the score-based (gradient-free) attack.
"""

from jaxjac._src.attacks.api import apgd as apgd
from jaxjac._src.attacks.api import apgd_targeted as apgd_targeted
from jaxjac._src.attacks.api import fgsm as fgsm
from jaxjac._src.attacks.api import pgd as pgd
from jaxjac._src.attacks.core import METHODS as METHODS
from jaxjac._src.attacks.core import SELECTS as SELECTS
from jaxjac._src.attacks.core import AttackConfig as AttackConfig
from jaxjac._src.attacks.fab import fab as fab
from jaxjac._src.attacks.losses import LOSSES as LOSSES
from jaxjac._src.attacks.losses import attack_loss as attack_loss
from jaxjac._src.attacks.norms import NORMS as NORMS
from jaxjac._src.attacks.norms import perturbation_norm as perturbation_norm
from jaxjac._src.attacks.square import square as square
