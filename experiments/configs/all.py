"""'All combined' of Hoffman et al. 2019: Jacobian regularization (lambda_JR = 0.01, one
projection) + L2 weight decay (5e-4) + dropout 0.5.

Run::

  python -m jaxjac.train --config experiments/configs/all.py --workdir runs/all
  python -m jaxjac.train --config experiments/configs/all.py:tiny --workdir /tmp/all_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.jr_lambda = 0.01
  config.reg.jr_estimator = "projection"
  config.reg.weight_decay = 5e-4
  config.model.dropout_rate = 0.5
  return training.config_variant(config, arg)
