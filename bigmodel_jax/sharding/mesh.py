"""The device mesh and the mapping of logical axis names onto it.

Parameters carry logical axis names ("embed", "mlp", "heads", ...); the rules that map them to the
mesh axes ("data", "fsdp", "tensor") are data, passed in from the config. A mesh axis that does not
divide a dimension is dropped for that dimension (the dimension is replicated instead), so small
vocabularies or odd head counts never make a mesh unusable.
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np
import optax
from flax import linen as nn
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the (data, fsdp, tensor) mesh; one axis may be -1 (all remaining devices).

  Args:
    shape: mesh axis name -> size, e.g. {"data": -1, "fsdp": 1, "tensor": 1}.
    devices: devices to use; defaults to all of them.

  Returns:
    A jax Mesh with axes MESH_AXES.

  Raises:
    ValueError: naming the `mesh` key whose size does not fit the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh has unknown axes {sorted(unknown)}; the axes are {MESH_AXES}")
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
        f"but {len(devices)} are available")
  return jax.make_mesh(tuple(sizes), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops the mesh axes of `spec` that do not evenly divide the matching dimension.

  Args:
    spec: a PartitionSpec over mesh axes.
    shape: the array shape it is meant for.
    mesh: the mesh.

  Returns:
    A PartitionSpec that evenly shards `shape`, without trailing unsharded (None) entries: the
    form in which jit writes its outputs' shardings, so that a state fed back into a jitted
    function with these shardings does not compile it a second time.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for dim, entry in zip(shape, entries[: len(shape)]):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    kept = []
    for axis in axes:
      if dim % (int(np.prod([mesh.shape[a] for a in kept])) * mesh.shape[axis]) == 0:
        kept.append(axis)
    fitted.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  while fitted and fitted[-1] is None:
    fitted.pop()
  return PartitionSpec(*fitted)


def param_shardings(abstract_params, mesh: Mesh, rules: LogicalRules):
  """NamedShardings for a pytree of NNX Params annotated with logical axis names.

  Args:
    abstract_params: an `nnx.State` of Params (abstract or concrete).
    mesh: the device mesh.
    rules: logical-to-mesh rules, e.g. (("embed", "fsdp"), ("mlp", "tensor")).

  Returns:
    A pure nested dict of NamedShardings with the structure of `abstract_params.to_pure_dict()`.
  """
  with nn.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(abstract_params)
  specs = nnx.to_pure_dict(specs)
  shapes = nnx.to_pure_dict(abstract_params)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)), specs, shapes,
      is_leaf=lambda x: isinstance(x, PartitionSpec))


def opt_state_shardings(abstract_opt_state, params_shardings, optimizer, mesh: Mesh):
  """Shardings for an optimizer state: param-shaped leaves follow their parameter.

  Leaves that optax identifies as per-parameter (moments, and reduced moments of the block
  optimizers) take their parameter's sharding, fitted to their own shape; all other leaves
  (counts, scalars) are replicated.

  Args:
    abstract_opt_state: the (abstract) optimizer state.
    params_shardings: shardings of the parameters.
    optimizer: the optax transformation that made `tree`.
    mesh: the device mesh.

  Returns:
    A pytree of NamedShardings with the structure of `abstract_opt_state`.
  """
  replicated = NamedSharding(mesh, PartitionSpec())

  def follow(leaf, sharding):
    if not hasattr(leaf, "shape") or not hasattr(sharding, "spec"):
      return replicated
    return NamedSharding(mesh, fit_spec(sharding.spec, leaf.shape, mesh))

  return optax.tree_map_params(
      optimizer, follow, abstract_opt_state, params_shardings,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a [batch, ...] input: the batch over the data and fsdp axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  """Number of ways the batch is split (data x fsdp)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
