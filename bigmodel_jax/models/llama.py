"""Llama: RMSNorm, SwiGLU MLP, no biases, RoPE, grouped-query attention."""

from flax import nnx

from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.transformer import Transformer


class Llama(Transformer):
  """The Llama decoder (Touvron et al., 2023), incl. Llama-3 RoPE scaling.

  Args:
    config: a TransformerConfig with architecture "llama".
    rngs: random streams for the initialisers.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if config.architecture != "llama":
      raise ValueError(f"Llama needs architecture 'llama', got {config.architecture!r}")
    super().__init__(config, rngs=rngs)
