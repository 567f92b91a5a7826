"""Scale-out: data parallelism over devices and hosts, and mixed precision.

The batch is split over the ``"data"`` axis of a :class:`jax.sharding.Mesh`,
parameters are replicated, and any step, attack or evaluation function is
jitted over the mesh with ``NamedSharding`` in/out shardings
(:func:`shard_train_step`, :func:`shard_attack`, :func:`shard_fn`).
Multi-host runs start with :func:`initialize_distributed` and load each
host's part of the data with :func:`host_shard`.

:func:`mixed_precision` runs a model in bfloat16 while parameters, inputs,
logits and Jacobian penalties stay float32.

Example::

  import jaxjac
  jaxjac.sharding.initialize_distributed()   # no-op unless launched multi-host
  mesh = jaxjac.sharding.make_mesh()          # all devices
  step = jaxjac.sharding.shard_train_step(train_step, mesh)
  state, metrics = step(state, (x, y), key)   # x, y: host-local NumPy
"""

from jaxjac._src.precision import PRECISIONS as PRECISIONS
from jaxjac._src.precision import cast_floating as cast_floating
from jaxjac._src.precision import mixed_precision as mixed_precision
from jaxjac._src.precision import with_precision as with_precision
from jaxjac._src.sharding import DATA_AXIS as DATA_AXIS
from jaxjac._src.sharding import check_batch_size as check_batch_size
from jaxjac._src.sharding import data_sharding as data_sharding
from jaxjac._src.sharding import gather as gather
from jaxjac._src.sharding import host_batch_size as host_batch_size
from jaxjac._src.sharding import host_shard as host_shard
from jaxjac._src.sharding import initialize_distributed as initialize_distributed
from jaxjac._src.sharding import make_mesh as make_mesh
from jaxjac._src.sharding import mesh_for_config as mesh_for_config
from jaxjac._src.sharding import num_data_shards as num_data_shards
from jaxjac._src.sharding import replicate as replicate
from jaxjac._src.sharding import replicated_sharding as replicated_sharding
from jaxjac._src.sharding import shard_attack as shard_attack
from jaxjac._src.sharding import shard_batch as shard_batch
from jaxjac._src.sharding import shard_fn as shard_fn
from jaxjac._src.sharding import shard_train_step as shard_train_step

__all__ = (
    "DATA_AXIS",
    "PRECISIONS",
    "cast_floating",
    "check_batch_size",
    "data_sharding",
    "gather",
    "host_batch_size",
    "host_shard",
    "initialize_distributed",
    "make_mesh",
    "mesh_for_config",
    "mixed_precision",
    "num_data_shards",
    "replicate",
    "replicated_sharding",
    "shard_attack",
    "shard_batch",
    "shard_fn",
    "shard_train_step",
    "with_precision",
)
