"""L2 weight decay: adds (lambda_WD / 2) ||theta||^2 with lambda_WD = 5e-4.

Run::

  python -m jaxjac.train --config experiments/configs/l2.py --workdir runs/l2
  python -m jaxjac.train --config experiments/configs/l2.py:tiny --workdir /tmp/l2_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.weight_decay = 5e-4
  return training.config_variant(config, arg)
