"""LeNet' with l_inf PGD adversarial training: ``experiments/configs/hoffman.py:at_pgd``.

Run::

  python -m jaxjac.train --config experiments/configs/at_pgd.py --workdir runs/at_pgd
  python -m jaxjac.train --config experiments/configs/at_pgd.py:tiny --workdir /tmp/at_pgd_tiny
"""

import os
import runpy

_HOFFMAN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hoffman.py"))


def get_config(arg: str | None = None):
  """``hoffman.py:at_pgd[,ARG]`` (``ARG``: ``tiny`` and/or ``seedS``)."""
  return _HOFFMAN["get_config"](",".join(["at_pgd"] + ([arg] if arg else [])))
