"""GPT-2: LayerNorm, GELU MLP, biases, learned positions, tied embeddings."""

from flax import nnx

from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.transformer import Transformer


class GPT2(Transformer):
  """The GPT-2 decoder (Radford et al., 2019).

  Args:
    config: a TransformerConfig with architecture "gpt2".
    rngs: random streams for the initialisers.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if config.architecture != "gpt2":
      raise ValueError(f"GPT2 needs architecture 'gpt2', got {config.architecture!r}")
    super().__init__(config, rngs=rngs)
