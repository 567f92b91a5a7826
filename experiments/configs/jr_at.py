"""LeNet' with JR + FGSM-RS adversarial training: ``experiments/configs/hoffman.py:jr_at``.

Run::

  python -m jaxjac.train --config experiments/configs/jr_at.py --workdir runs/jr_at
  python -m jaxjac.train --config experiments/configs/jr_at.py:tiny --workdir /tmp/jr_at_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:jr_at[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["jr_at"] + ([arg] if arg else [])))
