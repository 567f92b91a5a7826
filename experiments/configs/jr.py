"""Jacobian regularization (Hoffman et al. 2019, arXiv:1908.02729): adds
(lambda_JR / 2) ||J||_F^2 estimated with one random projection, lambda_JR = 0.01.

Run::

  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr
  python -m jaxjac.train --config experiments/configs/jr.py:tiny --workdir /tmp/jr_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.jr_lambda = 0.01
  config.reg.jr_norm = "frobenius"
  config.reg.jr_estimator = "projection"
  config.reg.jr_num_projections = 1
  return training.config_variant(config, arg)
