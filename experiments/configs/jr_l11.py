"""l_{1,1} Jacobian regularization (Wu and Li 2024, arXiv:2412.12449, the l_inf surrogate):
adds (lambda / 2) ||J||_{1,1}, estimated from one random row of J, lambda = 0.01.

Run::

  python -m jaxjac.train --config experiments/configs/jr_l11.py --workdir runs/jr_l11
  python -m jaxjac.train --config experiments/configs/jr_l11.py:tiny --workdir /tmp/jr_l11_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.jr_lambda = 0.01
  config.reg.jr_norm = "l11"
  config.reg.jr_estimator = "projection"
  config.reg.jr_num_projections = 1
  return training.config_variant(config, arg)
