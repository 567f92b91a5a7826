"""Pieces shared by the paper configs (loaded by path; not a config itself)."""

import ml_collections

from jaxjac import training


def split_seed(arg: str) -> tuple[list[str], int]:
  """``"A,B,seedS,C"`` -> ``(["A", "B", "C"], S)`` (seed 0 when there is no ``seedS``)."""
  parts, seed = [], 0
  for part in arg.split(","):
    if part.startswith("seed"):
      if not part[4:].isdigit():
        raise ValueError(f"get_config(arg): the seed must be 'seed<int>', got {part!r}.")
      seed = int(part[4:])
    else:
      parts.append(part)
  return parts, seed


def small_mlp(*, train_size: int, batch_size: int, num_steps: int) -> ml_collections.ConfigDict:
  """An MLP 784-128-10 on a random `train_size`-image subset of MNIST, Adam 1e-3 without
  quenches, no regularizer, a checkpoint at the end."""
  c = training.default_config()
  c.model = ml_collections.ConfigDict({"name": "mlp", "features": (128,), "dropout_rate": 0.0})
  c.data.train_size = train_size
  c.batch_size = batch_size
  c.num_steps = num_steps
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.quench_epochs = ()
  c.heldout_size = 200
  c.checkpoint_every = num_steps
  c.keep_checkpoints = 1
  c.progress_bar = False
  return c
