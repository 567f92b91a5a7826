"""Hoffman et al. 2019 (arXiv:1908.02729): every LeNet' model of the experiments, one
config tree. The reduced size that fits a 2-core CPU: LeNet' on full MNIST, Adam (rate
1e-3, ten-fold quench at 80% of the run), batch 64, 1875 steps (120000 images, two
epochs). The paper trains for many epochs with SGD; these runs are a reduced-budget
reproduction and are labelled so in ``experiments/RESULTS.md``.

``arg`` is ``"NAME[,seedS][,tiny]"``: the model NAME (below), the seed S (default 0)
and ``tiny`` for the seconds-long variant (a small MLP, a few steps; its numbers mean
nothing). Models:

* Table 1: ``none`` (no regularization); ``l2`` (weight decay
  ``lambda_WD = 5e-4``); ``dropout`` (0.5 on the 1024 hidden units); ``jr`` (Jacobian
  regularization ``(lambda_JR / 2) ||J||_F^2``, ``lambda_JR = 0.01``, one random
  projection); ``all`` (``l2`` + ``dropout`` + ``jr``).
* Figure 3: ``at``: adversarial training with a one-step PGD attack from a random
  start (l_inf ``eps = 0.1``, step ``1.25 eps``: the "fast" FGSM-RS adversarial
  training of Wong, Rice, Kolter 2020, arXiv:2001.03994, chosen because multi-step PGD
  does not fit the CPU budget), half clean and half adversarial loss; ``jr_at``:
  ``jr`` + ``at``.
* Figure 3 on the paper's base (L2 ``5e-4`` and dropout ``0.5`` under every model):
  ``base``, ``base_jr`` (the same as ``all``), ``base_at``, ``base_jr_at`` (AT as in
  ``at``).
* Table 1 at a longer budget: ``none_long``, ``l2_long``, ``dropout_long``, ``jr_long``,
  ``all_long``: SGD with momentum 0.9 at rate 0.01, batch 64, 6 epochs, ten-fold
  quenches after epochs 4 and 5.
* Other regularizers on the same budget: ``jr_exact`` (``jr`` with the exact
  ``||J||_F^2``); ``jr_l11`` (Wu and Li 2024, arXiv:2412.12449: ``(lambda / 2)
  ||J||_{1,1}`` from one random row, ``lambda = 0.01``); ``igr`` (input-gradient
  regularization, ``lambda_IGR = 1``); ``at_pgd`` (Madry et al.'s l_inf PGD adversarial
  training, ``eps = 0.3``, 10 steps, adversarial loss only).
* Amortized JR (the cost options of ``jaxjac.training``): ``jr_frac2`` / ``jr_frac4``
  (``jr`` with the penalty on a random half / quarter of each batch) and ``jr_every2`` /
  ``jr_every4`` / ``jr_every8`` (``jr`` with the penalty every k steps, weighted by k).

Run::

  python -m jaxjac.train --config experiments/configs/hoffman.py:jr --workdir runs/hoffman/jr
  python -m jaxjac.train --config experiments/configs/hoffman.py:jr_frac2,seed1 \\
      --workdir runs/hoffman/jr_frac2_s1
  python -m jaxjac.train --config experiments/configs/hoffman.py:jr,tiny --workdir /tmp/jr_tiny
  python experiments/hoffman.py table1 --data_dir /path/to/mnist   # all of Table 1
"""

import os
import runpy

import ml_collections

from jaxjac import training

_PARTS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_parts.py"))

TABLE1 = ("none", "l2", "dropout", "jr", "all")
ADVERSARIAL = ("at", "jr_at")
FIGURE3 = TABLE1 + ADVERSARIAL
EXTRA = ("jr_exact", "jr_l11", "igr", "at_pgd")
# Figure 3 as the paper sets it: every model on a base of L2 (5e-4) and dropout (0.5).
FIGURE3_BASE = ("base", "base_jr", "base_at", "base_jr_at")
# Table 1 at the longer budget (`long_budget`): the paper's SGD with momentum and quenches.
TABLE1_LONG = tuple(f"{m}_long" for m in TABLE1)
AMORTIZED = {
  "jr_frac2": {"jr_fraction": 0.5},
  "jr_frac4": {"jr_fraction": 0.25},
  "jr_every2": {"jr_every": 2},
  "jr_every4": {"jr_every": 4},
  "jr_every8": {"jr_every": 8},
}
MODELS = FIGURE3 + EXTRA + tuple(AMORTIZED) + FIGURE3_BASE + TABLE1_LONG


def base() -> ml_collections.ConfigDict:
  """The reduced-budget LeNet' run shared by every model."""
  c = training.default_config()
  c.model.name = "lenet"
  c.batch_size = 64
  c.num_steps = 1875
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  # 1875 steps of 64 on 60000 images (937 steps an epoch) = 2 epochs; quench at 80% of
  # the run (step 1500).
  c.optimizer.quench_epochs = (1500 / 937,)
  c.optimizer.quench_factor = 0.1
  c.log_every = 100
  c.heldout_every = 250
  c.heldout_size = 200
  c.checkpoint_every = 250
  c.keep_checkpoints = 1
  c.progress_bar = False
  return c


def long_budget(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Table 1 at the longer budget: SGD with momentum 0.9 at rate 0.01, batch 64, 6 epochs
  (5625 steps), ten-fold quenches after epochs 4 and 5."""
  c.num_steps = 0
  c.num_epochs = 6
  c.optimizer.update(name="sgd", learning_rate=0.01, momentum=0.9, nesterov=False)
  c.optimizer.quench_epochs = (4.0, 5.0)
  c.optimizer.quench_factor = 0.1
  c.heldout_every = 469
  c.checkpoint_every = 469
  return c


def _jr(c: ml_collections.ConfigDict, norm: str = "frobenius", estimator: str = "projection"):
  c.reg.jr_lambda = 0.01
  c.reg.jr_norm = norm
  c.reg.jr_estimator = estimator
  c.reg.jr_num_projections = 1


def apply_model(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets the regularizers of model `name` (one of :data:`MODELS`) on `c`."""
  if name not in MODELS:
    raise ValueError(f"get_config(arg): the model must be one of {MODELS}, got {name!r}.")
  if name in TABLE1_LONG:
    return apply_model(long_budget(c), name[: -len("_long")])
  if name in FIGURE3_BASE:
    c.reg.weight_decay = 5e-4
    c.model.dropout_rate = 0.5
    name = {"base": "none", "base_jr": "jr", "base_at": "at", "base_jr_at": "jr_at"}[name]
  if name in ("l2", "all"):
    c.reg.weight_decay = 5e-4
  if name in ("dropout", "all"):
    c.model.dropout_rate = 0.5
  if name in ("jr", "all", "jr_at") or name in AMORTIZED:
    _jr(c)
  if name in AMORTIZED:
    c.reg.update(AMORTIZED[name])
  if name == "jr_exact":
    _jr(c, estimator="exact")
  if name == "jr_l11":
    _jr(c, norm="l11")
  if name == "igr":
    c.reg.igr_lambda = 1.0
  if name in ADVERSARIAL:
    c.reg.update(at_norm="linf", at_eps=0.1, at_steps=1, at_step_size=0.125, at_weight=0.5)
  if name == "at_pgd":
    c.reg.update(at_norm="linf", at_eps=0.3, at_steps=10, at_weight=1.0)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg = "NAME[,seedS][,tiny]"`` with NAME in :data:`MODELS` (default ``none``)."""
  parts, seed = _PARTS["split_seed"](arg or "none")
  config = apply_model(base(), parts[0])
  config.seed = seed
  return training.config_variant(config, ",".join(parts[1:]))
