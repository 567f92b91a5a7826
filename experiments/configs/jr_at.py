"""Jacobian regularization (lambda_JR = 0.01, one projection, on the clean inputs) plus
l_inf PGD adversarial training (eps = 0.3, 10 steps).

Run::

  python -m jaxjac.train --config experiments/configs/jr_at.py --workdir runs/jr_at
  python -m jaxjac.train --config experiments/configs/jr_at.py:tiny --workdir /tmp/jr_at_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.jr_lambda = 0.01
  config.reg.jr_estimator = "projection"
  config.reg.at_norm = "linf"
  config.reg.at_eps = 0.3
  config.reg.at_steps = 10
  return training.config_variant(config, arg)
