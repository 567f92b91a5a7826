"""Baseline ('none' in Hoffman et al. 2019, Table 1): LeNet', no regularizer.

Run::

  python -m jaxjac.train --config experiments/configs/baseline.py --workdir runs/baseline
  python -m jaxjac.train --config experiments/configs/baseline.py:tiny --workdir /tmp/baseline_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  return training.config_variant(config, arg)
