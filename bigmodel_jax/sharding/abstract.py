"""Models as abstract values: the shapes, dtypes and logical axes of a model without its memory.

The sharding of every parameter is read from an abstract model (`nnx.eval_shape`), so a model of
any size is planned, sharded and sized before a single array exists.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import TransformerConfig, create_model


def split_params(model: nnx.Module):
  """`nnx.split` of a model that holds only parameters.

  Args:
    model: a concrete or abstract module.

  Returns:
    (graphdef, nnx.State of its Params).

  Raises:
    ValueError: when the model holds state other than nnx.Param (the train state carries only
      parameters).
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError(
        f"the model holds non-parameter state {jax.tree.structure(rest)}; the train state "
        "only carries nnx.Param")
  return graphdef, params


def abstract_model(model_config: TransformerConfig, create: Callable = create_model):
  """The model's static graph and its abstract Params (no memory allocated).

  Args:
    model_config: the model's configuration.
    create: (model_config, rngs) -> the module; default the transformer of `model_config`.

  Returns:
    (graphdef, nnx.State of abstract Params carrying logical axis names).
  """
  model = nnx.eval_shape(lambda: create(model_config, nnx.Rngs(0)))
  return split_params(model)


def tree_bytes(tree) -> int:
  """Total bytes of the array leaves of a pytree (concrete or abstract)."""
  return sum(int(x.size) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
             if hasattr(x, "dtype"))
