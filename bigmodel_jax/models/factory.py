"""Builds the transformer that a config's features describe."""

from flax import nnx

from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.transformer import Transformer


def create_model(config: TransformerConfig, rngs: nnx.Rngs) -> Transformer:
  """Creates the Transformer of `config`'s features, with unsharded (host-placed) parameters.

  Parameters carry logical axis names but are created without eager sharding, so this works
  outside a mesh (and under nnx.eval_shape); the trainer shards them later from those names.

  Args:
    config: the model config.
    rngs: random streams for the initialisers.

  Returns:
    The Transformer module.
  """
  with nnx.use_eager_sharding(False):
    return Transformer(config, rngs=rngs)
