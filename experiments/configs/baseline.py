"""LeNet' with no regularization: ``experiments/configs/hoffman.py:none``.

Run::

  python -m jaxjac.train --config experiments/configs/baseline.py --workdir runs/baseline
  python -m jaxjac.train --config experiments/configs/baseline.py:tiny --workdir /tmp/baseline_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:none[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["none"] + ([arg] if arg else [])))
