"""LeNet' with dropout 0.5: ``experiments/configs/hoffman.py:dropout``.

Run::

  python -m jaxjac.train --config experiments/configs/dropout.py --workdir runs/dropout
  python -m jaxjac.train --config experiments/configs/dropout.py:tiny --workdir /tmp/dropout_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:dropout[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["dropout"] + ([arg] if arg else [])))
