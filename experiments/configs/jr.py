"""LeNet' with Jacobian regularization (one random projection): ``configs/hoffman.py:jr``.

Run::

  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr
  python -m jaxjac.train --config experiments/configs/jr.py:tiny --workdir /tmp/jr_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:jr[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["jr"] + ([arg] if arg else [])))
