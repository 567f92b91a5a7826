"""Starting ``jax.distributed`` for a multi-host run from the environment.

One process per host runs the same program; :func:`initialize_distributed`
joins them before anything touches a device, reading the launcher's
variables (explicit ``JAX_*``, SLURM, Open MPI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax


def _env_int(env: Mapping[str, str], name: str) -> int:
  value = env[name]
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {value!r}.") from None


def initialize_distributed(*, environ: Mapping[str, str] | None = None) -> bool:
  """Starts ``jax.distributed`` when the environment describes a multi-host run.

  Must run before any other JAX call in the process. Recognized, in order:

  * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``: explicit;
    ``JAX_LOCAL_DEVICE_IDS`` (comma-separated) optionally restricts the
    devices of this process. With only the address set, the process count
    and id come from the cluster (SLURM, Open MPI).
  * SLURM with ``SLURM_NTASKS > 1`` (``srun``), or Open MPI with
    ``OMPI_COMM_WORLD_SIZE > 1`` (``mpirun``): JAX's own auto-detection.

  Otherwise it does nothing: a single-process run.

  Args:
    environ: the environment to read, ``os.environ`` by default.

  Returns:
    True if ``jax.distributed`` is initialized (now or before), else False.

  Raises:
    ValueError: a partial or malformed explicit configuration, e.g.
      ``JAX_NUM_PROCESSES`` without ``JAX_COORDINATOR_ADDRESS``.
  """
  env = os.environ if environ is None else environ
  if jax.distributed.is_initialized():
    return True
  address = env.get("JAX_COORDINATOR_ADDRESS")
  has_count, has_id = "JAX_NUM_PROCESSES" in env, "JAX_PROCESS_ID" in env
  if address:
    if has_count != has_id:
      raise ValueError(
        "set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, to take them from "
        f"SLURM / Open MPI); got only {'JAX_NUM_PROCESSES' if has_count else 'JAX_PROCESS_ID'}."
      )
    kwargs: dict[str, Any] = {"coordinator_address": address}
    if has_count:
      num_processes = _env_int(env, "JAX_NUM_PROCESSES")
      process_id = _env_int(env, "JAX_PROCESS_ID")
      if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
          "JAX_PROCESS_ID must be in [0, JAX_NUM_PROCESSES), got "
          f"JAX_PROCESS_ID={process_id}, JAX_NUM_PROCESSES={num_processes}."
        )
      kwargs.update(num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**kwargs)
    return True
  if has_count or has_id:
    raise ValueError(
      "JAX_NUM_PROCESSES / JAX_PROCESS_ID are set but JAX_COORDINATOR_ADDRESS "
      "(host:port of process 0) is not; set it on every process."
    )
  slurm = "SLURM_JOB_ID" in env and "SLURM_STEP_NODELIST" in env
  if slurm and int(env.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
    return True
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    jax.distributed.initialize()
    return True
  return False
