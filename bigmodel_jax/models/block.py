"""One pre-norm transformer block."""

import jax
from flax import nnx

from bigmodel_jax.models.attention import Attention, LayerCache
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

  def cached(self, x: jax.Array, positions: jax.Array, cache: LayerCache, index: jax.Array
             ) -> tuple[jax.Array, LayerCache]:
    """Applies the block to new positions, attending through (and updating) the KV cache.

    Args:
      x: [batch, length, embed] residual stream of the new positions.
      positions: int32[batch, length] their positions.
      cache: this layer's keys and values.
      index: int32 scalar, the cache slot of the first new position.

    Returns:
      (the updated residual stream, the updated cache).
    """
    attended, cache = self.attn.cached(self.attn_norm(x), positions, cache, index)
    x = x + attended
    return x + self.mlp(self.mlp_norm(x)), cache
