"""Wu and Li 2024 (arXiv:2412.12449) lambda sweep at CPU size: an MLP 784-128-10 on a
fixed random 1000-image subset of MNIST (small, so that the generalization gaps are
visible), Adam 1e-3, batch 50, 200 steps (10 epochs), with the exact Jacobian
regularizer ``(lambda / 2) N(J)``, ``N = ||J||_F^2`` (the l_2 regularizer) or
``N = ||J||_{1,1}`` (the l_inf one). Their model, lambdas and eps are not known to
us; these are our choices.

``arg`` is ``"NORM,LAMBDA"`` (optionally ``,tiny``) with NORM ``frobenius`` or ``l11``,
e.g. ``"frobenius,0.1"``; ``LAMBDA = 0`` is the unregularized run.

``"NORM,surrogate"`` (optionally ``,tiny``) is their Figure-1 run instead: the same
model trained on the Jacobian surrogate of the robust loss
(``config.loss.name = "surrogate"``, :func:`jaxjac.jacobian_surrogate_loss`, exact
Jacobians) at the radius :data:`EPS` of the norm the regularizer belongs to (l_2 for
``frobenius``, l_inf for ``l11``), with a checkpoint every :data:`SURROGATE_EVERY`
steps (all kept) so that the losses can be traced over training.

Run::

  python -m jaxjac.train --config experiments/configs/wu_li.py:frobenius,0.1 \\
      --workdir runs/wu_li/frobenius_0.1
  python -m jaxjac.train --config experiments/configs/wu_li.py:l11,surrogate \\
      --workdir runs/wu_li/surrogate_l11
  python experiments/wu_li.py lambda_sweep     # the whole sweep, evaluated
"""

import math
import os
import runpy

import ml_collections

from jaxjac import training

_PARTS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_parts.py"))

LAMBDAS = {"frobenius": (0.1, 1.0), "l11": (0.01, 0.1)}
# The attack norm of each regularizer, its radius and its p (Wu and Li's Theorem 3.2).
NORM_OF_REG = {"frobenius": "l2", "l11": "linf"}
EPS = {"l2": 1.0, "linf": 0.1}
P = {"l2": 2.0, "linf": math.inf}
SURROGATE_EVERY = 13


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg = "NORM,LAMBDA[,tiny]"`` or ``"NORM,surrogate[,tiny]"``; see the module docstring."""
  parts = (arg or "frobenius,0.1").split(",")
  try:
    norm, surrogate = parts[0], parts[1] == "surrogate"
    lam = 0.0 if surrogate else float(parts[1])
  except (IndexError, ValueError):
    norm = None
  if norm not in LAMBDAS:
    raise ValueError(
      "get_config(arg): arg must be 'NORM,LAMBDA[,tiny]' or 'NORM,surrogate[,tiny]' with "
      f"NORM in {tuple(LAMBDAS)} and LAMBDA a number, got {arg!r}."
    )
  c = _PARTS["small_mlp"](train_size=1000, batch_size=50, num_steps=200)
  c.update(log_every=20, heldout_every=50)
  c.reg.jr_lambda = lam
  c.reg.jr_norm = norm
  c.reg.jr_estimator = "exact"
  if surrogate:
    attack = NORM_OF_REG[norm]
    c.loss.update(name="surrogate", eps=EPS[attack], p=P[attack], estimator="exact")
    c.checkpoint_every = SURROGATE_EVERY
    c.keep_checkpoints = 1000
  return training.config_variant(c, ",".join(parts[2:]))
