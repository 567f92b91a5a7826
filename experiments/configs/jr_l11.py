"""LeNet' with l_{1,1} Jacobian regularization: ``experiments/configs/hoffman.py:jr_l11``.

Run::

  python -m jaxjac.train --config experiments/configs/jr_l11.py --workdir runs/jr_l11
  python -m jaxjac.train --config experiments/configs/jr_l11.py:tiny --workdir /tmp/jr_l11_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:jr_l11[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["jr_l11"] + ([arg] if arg else [])))
