"""Input-gradient regularization (double backpropagation): adds
(lambda_IGR / 2) mean_b ||grad_x l_b||_2^2 with lambda_IGR = 1.

Run::

  python -m jaxjac.train --config experiments/configs/igr.py --workdir runs/igr
  python -m jaxjac.train --config experiments/configs/igr.py:tiny --workdir /tmp/igr_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.reg.igr_lambda = 1.0
  return training.config_variant(config, arg)
