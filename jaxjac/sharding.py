"""Scale-out: data parallelism over devices and hosts.

The batch is split over the ``"data"`` axis of a :class:`jax.sharding.Mesh`,
parameters are replicated, and any step, attack or evaluation function is
jitted over the mesh with ``NamedSharding`` in/out shardings
(:func:`shard_train_step`, :func:`shard_attack`, :func:`shard_fn`).

Multi-host runs start with :func:`initialize_distributed` (from the
``JAX_*`` variables, SLURM or Open MPI; ``python -m jaxjac.train`` calls it).
Each process then loads its rows of every global batch
(:func:`host_batch_slice`, or :func:`shard_global_batch` in one call) or its
own part of the dataset (:func:`host_shard`, :func:`host_batch_size`), and
:func:`shard_batch` assembles the global batch. :func:`unreplicate` gives
each process its local copy of replicated results, :func:`gather` fetches
sharded ones.

Mixed precision is in :mod:`jaxjac.precision`.

Example::

  import jaxjac
  jaxjac.sharding.initialize_distributed()   # no-op unless launched multi-host
  mesh = jaxjac.sharding.make_mesh()          # all devices
  step = jaxjac.sharding.shard_train_step(train_step, mesh)
  rows = jaxjac.sharding.host_batch_slice(len(x), mesh)
  state, metrics = step(state, (x[rows], y[rows]), key)   # x, y: the global batch
"""

from jaxjac._src.distributed import initialize_distributed as initialize_distributed
from jaxjac._src.host_data import gather as gather
from jaxjac._src.host_data import host_batch_size as host_batch_size
from jaxjac._src.host_data import host_batch_slice as host_batch_slice
from jaxjac._src.host_data import host_shard as host_shard
from jaxjac._src.host_data import replicate as replicate
from jaxjac._src.host_data import shard_batch as shard_batch
from jaxjac._src.host_data import shard_global_batch as shard_global_batch
from jaxjac._src.host_data import unreplicate as unreplicate
from jaxjac._src.mesh import DATA_AXIS as DATA_AXIS
from jaxjac._src.mesh import check_batch_size as check_batch_size
from jaxjac._src.mesh import data_sharding as data_sharding
from jaxjac._src.mesh import make_mesh as make_mesh
from jaxjac._src.mesh import mesh_for_config as mesh_for_config
from jaxjac._src.mesh import num_data_shards as num_data_shards
from jaxjac._src.mesh import replicated_sharding as replicated_sharding
from jaxjac._src.sharding import shard_attack as shard_attack
from jaxjac._src.sharding import shard_fn as shard_fn
from jaxjac._src.sharding import shard_train_step as shard_train_step

__all__ = (
  "DATA_AXIS",
  "check_batch_size",
  "data_sharding",
  "gather",
  "host_batch_size",
  "host_batch_slice",
  "host_shard",
  "initialize_distributed",
  "make_mesh",
  "mesh_for_config",
  "num_data_shards",
  "replicate",
  "replicated_sharding",
  "shard_attack",
  "shard_batch",
  "shard_fn",
  "shard_global_batch",
  "shard_train_step",
  "unreplicate",
)
