"""Command line: train a model from a Python config file.

Usage::

  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr
  python -m jaxjac.train --config experiments/configs/jr.py:tiny --workdir /tmp/jr_tiny
  python -m jaxjac.train --config experiments/configs/baseline.py --workdir runs/base \\
      --config.num_epochs=5 --config.reg.weight_decay=5e-4
  python -m jaxjac.train --config experiments/configs/jr.py --workdir runs/jr --resume

``--config`` takes a file defining ``get_config(arg=None)`` returning an
``ml_collections.ConfigDict`` (see :func:`jaxjac.training.default_config`) or
a ``dict`` (converted); ``FILE:ARG`` passes ``ARG`` (e.g. ``tiny``). Any
field can be overridden with ``--config.FIELD=VALUE`` (nested fields with
dots, typed like the field). ``--resume`` continues from the latest
checkpoint in ``--workdir``. The console script ``jaxjac-train`` is the same
program.

Every user error (a bad flag, a misspelled field, a missing config file, a
bad ``--workdir``, an invalid config value) is one line on stderr and exit
code 2; ``--traceback`` or ``JAXJAC_TRACEBACK=1`` shows the traceback. Ctrl-C
prints the step reached and the command that continues the run.

Multi-host: run the same command on every host with ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (or under SLURM ``srun`` / Open MPI
``mpirun``); :func:`jaxjac.sharding.initialize_distributed` joins the processes
before anything touches a device, and process 0 writes the metrics and summary.
"""

from jaxjac._src.cli import main as main
from jaxjac._src.cli import run as run

__all__ = ("main", "run")

if __name__ == "__main__":
  main()
