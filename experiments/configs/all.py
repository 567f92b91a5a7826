"""LeNet' with L2 + dropout + JR: ``experiments/configs/hoffman.py:all``.

Run::

  python -m jaxjac.train --config experiments/configs/all.py --workdir runs/all
  python -m jaxjac.train --config experiments/configs/all.py:tiny --workdir /tmp/all_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:all[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["all"] + ([arg] if arg else [])))
