"""Dropout 0.5 on LeNet's 1024 hidden units.

Run::

  python -m jaxjac.train --config experiments/configs/dropout.py --workdir runs/dropout
  python -m jaxjac.train --config experiments/configs/dropout.py:tiny --workdir /tmp/dropout_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  config.model.dropout_rate = 0.5
  return training.config_variant(config, arg)
