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

import ml_collections

from jaxjac import training

ESTIMATORS = ("exact", "proj1", "proj3", "none")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg = "ESTIMATOR,seedS[,tiny]"``; see the module docstring."""
  parts = (arg or "proj1,seed0").split(",")
  name = parts[0]
  if name not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {name!r}.")
  seed = 0
  rest = []
  for part in parts[1:]:
    if part.startswith("seed"):
      seed = int(part[4:])
    else:
      rest.append(part)
  c = training.default_config()
  c.seed = seed
  c.model = ml_collections.ConfigDict({"name": "mlp", "features": (128,), "dropout_rate": 0.0})
  c.data.train_size = 2000
  c.batch_size = 50
  c.num_steps = 120
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.quench_epochs = ()
  c.log_every = 50
  c.heldout_every = 20
  c.heldout_size = 200
  c.checkpoint_every = 120
  c.keep_checkpoints = 1
  c.progress_bar = False
  if name != "none":
    c.reg.jr_lambda = 0.01
    c.reg.jr_norm = "frobenius"
    c.reg.jr_estimator = "exact" if name == "exact" else "projection"
    c.reg.jr_num_projections = 3 if name == "proj3" else 1
  return training.config_variant(c, ",".join(rest))
