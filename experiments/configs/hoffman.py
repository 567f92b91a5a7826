"""Hoffman et al. 2019 (arXiv:1908.02729) Table 1 / Figure 3 models, at the reduced size
that fits a 2-core CPU: LeNet' on full MNIST, Adam (rate 1e-3, ten-fold quench at 80% of
the run), batch 64, 1875 steps (120000 images, two epochs). The paper trains for many
epochs with SGD; these runs are a reduced-budget reproduction and are labelled so in
``experiments/RESULTS.md``.

``arg`` names the model, optionally followed by ``,tiny``:

* ``none``: no regularization;
* ``l2``: weight decay ``lambda_WD = 5e-4``;
* ``dropout``: dropout 0.5 on the 1024 hidden units;
* ``jr``: Jacobian regularization, ``lambda_JR = 0.01``, one random projection;
* ``all``: ``l2`` + ``dropout`` + ``jr``;
* ``at``: adversarial training with a one-step PGD attack from a random start
  (l_inf ``eps = 0.1``, step ``1.25 eps``: the "fast" FGSM-RS adversarial training of
  Wong, Rice, Kolter 2020, arXiv:2001.03994, chosen because multi-step PGD does not fit
  the CPU budget), half clean and half adversarial loss;
* ``jr_at``: ``jr`` + ``at``.

Run::

  python -m jaxjac.train --config experiments/configs/hoffman.py:jr --workdir runs/hoffman/jr
  python -m jaxjac.train --config experiments/configs/hoffman.py:jr,tiny --workdir /tmp/jr_tiny
  python experiments/hoffman.py table1      # trains and evaluates all of Table 1
"""

import ml_collections

from jaxjac import training

MODELS = ("none", "l2", "dropout", "jr", "all", "at", "jr_at")
TABLE1 = ("none", "l2", "dropout", "jr", "all")
ADVERSARIAL = ("at", "jr_at")


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


def apply_model(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets the regularizers of model `name` (one of :data:`MODELS`) on `c`."""
  if name not in MODELS:
    raise ValueError(f"`name` must be one of {MODELS}, got {name!r}.")
  if name in ("l2", "all"):
    c.reg.weight_decay = 5e-4
  if name in ("dropout", "all"):
    c.model.dropout_rate = 0.5
  if name in ("jr", "all", "jr_at"):
    c.reg.jr_lambda = 0.01
    c.reg.jr_norm = "frobenius"
    c.reg.jr_estimator = "projection"
    c.reg.jr_num_projections = 1
  if name in ADVERSARIAL:
    c.reg.at_norm = "linf"
    c.reg.at_eps = 0.1
    c.reg.at_steps = 1
    c.reg.at_step_size = 0.125
    c.reg.at_weight = 0.5
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg = "NAME"`` or ``"NAME,tiny"`` with NAME in :data:`MODELS`."""
  parts = (arg or "none").split(",")
  name, variant = parts[0], ",".join(parts[1:])
  config = apply_model(base(), name)
  return training.config_variant(config, variant)
