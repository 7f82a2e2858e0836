"""The training state: a pure pytree of step, parameters and optimizer state.

The model is split once into its static graph (`nnx.split`) and its parameters, held as a plain
nested dict; the train step merges them back (`nnx.merge`) inside jit. The state is created
directly onto the mesh: an abstract model gives the logical shardings, and the initialiser is
jitted with those as `out_shardings`, so no device ever holds the whole model.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bigmodel_jax import sharding
from bigmodel_jax.models import TransformerConfig, create_model
from bigmodel_jax.sharding import abstract_model, split_params


class TrainState(NamedTuple):
  """Everything a training step reads and writes.

  Attributes:
    step: int32 scalar, number of optimizer steps taken.
    params: nested dict of parameter arrays (module path -> leaf name -> array).
    opt_state: the optax state for `params`.
  """

  step: jax.Array
  params: Any
  opt_state: optax.OptState


def state_shardings(abstract_params, optimizer, mesh: Mesh, rules) -> TrainState:
  """NamedShardings for every leaf of the TrainState.

  Args:
    abstract_params: the abstract nnx.State of Params from `abstract_model`.
    optimizer: the optax transformation.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.

  Returns:
    A TrainState whose leaves are NamedShardings.
  """
  params_shardings = sharding.param_shardings(abstract_params, mesh, rules)
  pure_params = nnx.to_pure_dict(abstract_params)
  abstract_opt_state = jax.eval_shape(optimizer.init, pure_params)
  return TrainState(
      step=NamedSharding(mesh, PartitionSpec()),
      params=params_shardings,
      opt_state=sharding.opt_state_shardings(abstract_opt_state, params_shardings, optimizer,
                                             mesh),
  )


def init_train_state(model_config: TransformerConfig, optimizer: optax.GradientTransformation,
                     mesh: Mesh, rules, seed: int, create: Callable = create_model,
                     init_params: Callable[[], Any] | None = None):
  """Initialises parameters and optimizer state directly onto the mesh.

  Args:
    model_config: the model's configuration.
    optimizer: the optax transformation.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    seed: the parameter initialisation seed.
    create: (model_config, rngs) -> the module; default the transformer of `model_config`.
    init_params: () -> the initial parameters (a pure dict, copied onto the mesh) instead of
      `create`'s initialisation.

  Returns:
    (graphdef, TrainState of sharded arrays, TrainState of their NamedShardings).
  """
  graphdef, abstract_params = abstract_model(model_config, create)
  shardings = state_shardings(abstract_params, optimizer, mesh, rules)

  def init(given):
    if given is None:
      _, params = split_params(create(model_config, nnx.Rngs(seed)))
      params = nnx.to_pure_dict(params)
    else:
      params = jax.tree.map(jnp.copy, given)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  state = jax.jit(init, out_shardings=shardings)(init_params() if init_params else None)
  return graphdef, state, shardings


def abstract_train_state(model_config: TransformerConfig, optimizer, mesh: Mesh, rules,
                         create: Callable = create_model):
  """The TrainState as ShapeDtypeStructs with shardings (for planning memory, no allocation).

  Args:
    model_config: the model's configuration.
    create: (model_config, rngs) -> the module; default the transformer of `model_config`.
    optimizer: the optax transformation.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.

  Returns:
    (graphdef, TrainState of jax.ShapeDtypeStruct with `.sharding` set).
  """
  graphdef, abstract_params = abstract_model(model_config, create)
  shardings = state_shardings(abstract_params, optimizer, mesh, rules)
  pure_params = nnx.to_pure_dict(abstract_params)
  shapes = TrainState(jax.ShapeDtypeStruct((), jnp.int32), pure_params,
                      jax.eval_shape(optimizer.init, pure_params))
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return graphdef, abstract
