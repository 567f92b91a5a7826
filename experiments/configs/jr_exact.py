"""Jacobian regularization with the exact ||J||_F^2 (C = 10 VJPs per step), lambda_JR = 0.01.

Run::

  python -m jaxjac.train --config experiments/configs/jr_exact.py --workdir runs/jr_exact
  python -m jaxjac.train --config experiments/configs/jr_exact.py:tiny --workdir /tmp/jr_exact_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.jr_lambda = 0.01
  config.reg.jr_norm = "frobenius"
  config.reg.jr_estimator = "exact"
  return training.config_variant(config, arg)
