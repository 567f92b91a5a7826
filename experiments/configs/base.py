"""Base configuration: LeNet' on MNIST, SGD with momentum and step-wise quenches, no
regularizer. Every other config starts from `jaxjac.training.default_config()`,
which documents all fields.

Run::

  python -m jaxjac.train --config experiments/configs/base.py --workdir runs/base
  python -m jaxjac.train --config experiments/configs/base.py:tiny --workdir /tmp/base_tiny
"""

from jaxjac import training


def get_config(arg: str | None = None):
  """The config; ``arg="tiny"`` gives the seconds-long variant."""
  config = training.default_config()
  return training.config_variant(config, arg)
