"""Builds the model class named by a config."""

from flax import nnx

from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.gpt2 import GPT2
from bigmodel_jax.models.llama import Llama

MODELS = {"gpt2": GPT2, "llama": Llama}


def create_model(config: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
  """Creates the model for `config.architecture`, with unsharded (host-placed) parameters.

  Parameters carry logical axis names but are created without eager sharding, so this works
  outside a mesh (and under nnx.eval_shape); the trainer shards them later from those names.

  Args:
    config: the model config.
    rngs: random streams for the initialisers.

  Returns:
    A GPT2 or Llama module.
  """
  with nnx.use_eager_sharding(False):
    return MODELS[config.architecture](config, rngs=rngs)
