"""LeNet' with weight decay 5e-4: ``experiments/configs/hoffman.py:l2``.

Run::

  python -m jaxjac.train --config experiments/configs/l2.py --workdir runs/l2
  python -m jaxjac.train --config experiments/configs/l2.py:tiny --workdir /tmp/l2_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:l2[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["l2"] + ([arg] if arg else [])))
