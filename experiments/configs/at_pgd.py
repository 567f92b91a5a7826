"""PGD adversarial training (Madry et al. 2017, arXiv:1706.06083): l_inf, eps = 0.3,
10 steps of 2.5 eps / 10, random start, trained on the adversarial loss only.
About 11 forward-backward passes per step: slow on a CPU.

Run::

  python -m jaxjac.train --config experiments/configs/at_pgd.py --workdir runs/at_pgd
  python -m jaxjac.train --config experiments/configs/at_pgd.py:tiny --workdir /tmp/at_pgd_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.at_norm = "linf"
  config.reg.at_eps = 0.3
  config.reg.at_steps = 10
  config.reg.at_weight = 1.0
  return training.config_variant(config, arg)
