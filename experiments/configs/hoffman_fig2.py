"""Hoffman et al. 2019 (arXiv:1908.02729) Figure 2 at CPU size: exact vs random-projection
Jacobian regularization (``lambda_JR = 0.01``) on an MLP 784-128-10 trained on a
random 2000-image subset of MNIST (per seed; Adam 1e-3, batch 50, 120 steps = 3
epochs), the held-out ``||J||_F`` on 200 test images every 20 steps and the test
accuracy (full test set) every epoch. The paper uses LeNet' on all of MNIST; this is the
cheap setting that lets three seeds of four runs fit the budget.

``arg`` is ``"ESTIMATOR,seedS"`` (optionally ``,tiny``) with ESTIMATOR one of

* ``none``: no regularization (for reference);
* ``exact``: the exact ``||J||_F^2`` (C = 10 one-hot VJPs);
* ``proj1`` / ``proj3``: random projections, ``n_proj`` = 1 / 3.

Run::

  python -m jaxjac.train --config experiments/configs/hoffman_fig2.py:proj1,seed0 \\
      --workdir runs/fig2/proj1_s0
  python experiments/hoffman.py estimators    # all estimators, 3 seeds, and the figure
"""

import os
import runpy

import ml_collections

from jaxjac import training

_PARTS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_parts.py"))

ESTIMATORS = ("exact", "proj1", "proj3", "none")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg = "ESTIMATOR,seedS[,tiny]"``; see the module docstring."""
  parts, seed = _PARTS["split_seed"](arg or "proj1,seed0")
  name = parts[0]
  if name not in ESTIMATORS:
    raise ValueError(f"get_config(arg): the estimator must be one of {ESTIMATORS}, got {name!r}.")
  c = _PARTS["small_mlp"](train_size=2000, batch_size=50, num_steps=120)
  c.seed = seed
  c.update(log_every=50, heldout_every=20)
  if name != "none":
    c.reg.jr_lambda = 0.01
    c.reg.jr_norm = "frobenius"
    c.reg.jr_estimator = "exact" if name == "exact" else "projection"
    c.reg.jr_num_projections = 3 if name == "proj3" else 1
  return training.config_variant(c, ",".join(parts[1:]))
