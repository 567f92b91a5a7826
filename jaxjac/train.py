"""Command line: train a model from a Python config file.

Usage::

  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr
  python -m jaxjac.train --config experiments/configs/jr.py:tiny --workdir /tmp/jr_tiny
  python -m jaxjac.train --config experiments/configs/baseline.py --workdir runs/base \\
      --config.num_epochs=5 --config.reg.weight_decay=5e-4
  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr --resume

``--config`` takes a file defining ``get_config(arg=None)`` (returning an
``ml_collections.ConfigDict``, see :func:`jaxjac.training.default_config`);
``FILE:ARG`` passes ``ARG`` (e.g. ``tiny``). Any field can be overridden with
``--config.FIELD=VALUE``. ``--resume`` continues from the latest checkpoint in
``--workdir``. The console script ``jaxjac-train`` is the same program.
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from jaxjac._src import training

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with get_config(); FILE:ARG passes ARG (e.g. ':tiny').",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics and checkpoints.")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  print(f"jaxjac.train: {config_file} -> {_WORKDIR.value}")
  result = training.train(config, _WORKDIR.value, resume=_RESUME.value)
  print(json.dumps(training._jsonable(result.summary), indent=1))


def main() -> None:
  """Entry point of ``python -m jaxjac.train`` and ``jaxjac-train``."""
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)


if __name__ == "__main__":
  main()
