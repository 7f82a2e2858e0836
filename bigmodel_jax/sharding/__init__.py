"""Where arrays live: the device mesh, logical-axis rules, and models as abstract values.

The layer between the building blocks (blocks, losses, models, data) and what trains with them
(optim, hessian, rl, hf, then train): it reads no config and writes no file.
"""

from bigmodel_jax.sharding.abstract import abstract_model, split_params, tree_bytes
from bigmodel_jax.sharding.mesh import (
  BATCH_AXES,
  MESH_AXES,
  LogicalRules,
  batch_sharding,
  data_parallel_size,
  fit_spec,
  make_mesh,
  opt_state_shardings,
  param_shardings,
)

__all__ = [
  "BATCH_AXES",
  "MESH_AXES",
  "LogicalRules",
  "abstract_model",
  "batch_sharding",
  "data_parallel_size",
  "fit_spec",
  "make_mesh",
  "opt_state_shardings",
  "param_shardings",
  "split_params",
  "tree_bytes",
]
