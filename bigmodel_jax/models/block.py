"""One pre-norm transformer block."""

import jax
from flax import nnx

from bigmodel_jax.models.attention import Attention
from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.mlp import make_mlp
from bigmodel_jax.models.norms import make_norm


class Block(nnx.Module):
  """x + attn(attn_norm(x)), then x + mlp(mlp_norm(x))."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.attn_norm = make_norm(config, rngs=rngs)
    self.attn = Attention(config, rngs=rngs)
    self.mlp_norm = make_norm(config, rngs=rngs)
    self.mlp = make_mlp(config, rngs=rngs)

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Applies the block.

    Args:
      x: [batch, length, embed] residual stream.
      positions: int32[batch, length] token positions.

    Returns:
      The updated residual stream, same shape and dtype.
    """
    x = x + self.attn(self.attn_norm(x), positions)
    return x + self.mlp(self.mlp_norm(x))
