"""The decoder-only transformer, built from the features of its config.

The blocks are stacked: they are created with `nnx.vmap` (one rng split per layer) and applied
with `nnx.scan`, so every per-layer parameter has a leading axis of size num_layers, annotated
with the logical axis name "layers", and compile time does not grow with depth.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import initializers
from bigmodel_jax.models.attention import LayerCache, softcap
from bigmodel_jax.models.block import Block
from bigmodel_jax.models.config import TransformerConfig
from bigmodel_jax.models.norms import make_norm

LAYERS_AXIS = "layers"
_LAYERS_METADATA = {nnx.PARTITION_NAME: LAYERS_AXIS}
# The stacked-layer declaration of these models for `bigmodel_jax.blocks` (layer_axes=): every leaf
# under `layers` stacks the layers on axis 0. nnx.State records it (logical axis name "layers");
# a pure dict (nnx.to_pure_dict) does not, so pass this with one.
LAYER_AXES = {LAYERS_AXIS: 0}


def _stacked_blocks(config: TransformerConfig, rngs: nnx.Rngs) -> Block:
  """Creates num_layers blocks whose parameters are stacked on a leading "layers" axis."""

  @nnx.split_rngs(splits=config.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=_LAYERS_METADATA)
  def create(rngs: nnx.Rngs) -> Block:
    return Block(config, rngs=rngs)

  return create(rngs)


def _embed(config: TransformerConfig, num_embeddings: int, names: tuple[str | None, str], *,
           rngs: nnx.Rngs) -> nnx.Embed:
  """An embedding table with logical axis names."""
  return nnx.Embed(num_embeddings, config.embed_dim, dtype=config.compute_dtype,
                   param_dtype=config.weight_dtype,
                   embedding_init=initializers.normal(names), rngs=rngs)


class Transformer(nnx.Module):
  """Token embedding (plus a learned position table unless RoPE), stacked pre-norm blocks, final
  norm and (tied or untied) LM head, its logits optionally soft-capped."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = _embed(config, config.vocab_size, ("vocab", "embed"), rngs=rngs)
    if not config.use_rope:
      # The position axis has no logical name: the table is never sharded along it.
      self.pos_embed = _embed(config, config.max_seq_len, (None, "embed"), rngs=rngs)
    self.layers = _stacked_blocks(config, rngs)
    self.final_norm = make_norm(config, rngs=rngs)
    if not config.tie_embeddings:
      self.lm_head = nnx.Linear(
          config.embed_dim, config.vocab_size, use_bias=False, dtype=config.compute_dtype,
          param_dtype=config.weight_dtype, preferred_element_type=jnp.float32,
          kernel_init=initializers.normal(("embed", "vocab")), rngs=rngs)

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Computes next-token logits.

    Args:
      tokens: int32[batch, length] token ids.
      positions: optional int32[batch, length] positions; defaults to 0..length-1.

    Returns:
      float32[batch, length, vocab_size] logits.
    """
    return self._logits(self.features(tokens, positions))

  def features(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """The final-normalised residual stream, [batch, length, embed] (what the LM head reads)."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    x = self._embed_tokens(tokens, positions)
    return self.final_norm(self._apply_layers(x, positions))

  def _embed_tokens(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    x = self.embed(tokens)
    if not self.config.use_rope:
      x = x + self.pos_embed(positions)
    return x

  def init_cache(self, batch_size: int, max_len: int) -> LayerCache:
    """An empty KV cache for every layer: key and value [num_layers, batch, max_len, K, Dh]."""
    c = self.config
    if max_len > c.max_seq_len:
      raise ValueError(f"cache max_len ({max_len}) exceeds max_seq_len ({c.max_seq_len})")
    shape = (c.num_layers, batch_size, max_len, c.num_kv_heads, c.head_dim)
    return LayerCache(jnp.zeros(shape, c.compute_dtype), jnp.zeros(shape, c.compute_dtype))

  def cached(self, tokens: jax.Array, cache: LayerCache, index: jax.Array
             ) -> tuple[jax.Array, LayerCache]:
    """Next-token logits of new tokens at positions index.., reading and writing the KV cache.

    Prefill is one call with the whole prompt at index 0; each decode step is a call with one
    token at index = number of tokens so far. Equals `__call__` on the whole prefix.

    Args:
      tokens: int32[batch, length] new token ids.
      cache: the stacked cache from `init_cache` (or a previous call).
      index: int32 scalar, the position of the first new token.

    Returns:
      (float32[batch, length, vocab_size] logits, the updated cache).
    """
    length = tokens.shape[1]
    positions = jnp.broadcast_to(index + jnp.arange(length, dtype=jnp.int32), tokens.shape)
    x = self._embed_tokens(tokens, positions)

    @nnx.scan(in_axes=(nnx.Carry, 0, 0, None, None), out_axes=(nnx.Carry, 0),
              unroll=self.config.scan_unroll, transform_metadata=_LAYERS_METADATA)
    def scan_fn(x, block, layer_cache, positions, index):
      return block.cached(x, positions, layer_cache, index)

    x, cache = scan_fn(x, self.layers, cache, positions, jnp.asarray(index, jnp.int32))
    return self._logits(self.final_norm(x)), cache

  def _apply_layers(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Runs the stacked blocks with nnx.scan, `config.scan_unroll` blocks per iteration (each
    rematerialised if config.remat)."""

    def apply(block: Block, x: jax.Array, positions: jax.Array) -> jax.Array:
      return block(x, positions)

    if self.config.remat:
      apply = nnx.remat(apply)

    @nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=nnx.Carry,
              unroll=self.config.scan_unroll, transform_metadata=_LAYERS_METADATA)
    def scan_fn(x: jax.Array, block: Block, positions: jax.Array) -> jax.Array:
      return apply(block, x, positions)

    return scan_fn(x, self.layers, positions)

  def _logits(self, x: jax.Array) -> jax.Array:
    """Projects onto the vocabulary with float32 accumulation and output (then soft-caps)."""
    if self.config.tie_embeddings:
      embedding = self.embed.embedding[...].astype(self.config.compute_dtype)
      logits = jnp.einsum("bld,vd->blv", x, embedding, preferred_element_type=jnp.float32)
    else:
      logits = self.lm_head(x).astype(jnp.float32)
    return softcap(logits, self.config.final_logit_softcap)
