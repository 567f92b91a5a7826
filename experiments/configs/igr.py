"""LeNet' with input-gradient regularization: ``experiments/configs/hoffman.py:igr``.

Run::

  python -m jaxjac.train --config experiments/configs/igr.py --workdir runs/igr
  python -m jaxjac.train --config experiments/configs/igr.py:tiny --workdir /tmp/igr_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:igr[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["igr"] + ([arg] if arg else [])))
