"""LeNet' with exact Jacobian regularization: ``experiments/configs/hoffman.py:jr_exact``.

Run::

  python -m jaxjac.train --config experiments/configs/jr_exact.py --workdir runs/jr_exact
  python -m jaxjac.train --config experiments/configs/jr_exact.py:tiny --workdir /tmp/jr_exact_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:jr_exact[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["jr_exact"] + ([arg] if arg else [])))
