"""Hyper-parameters of the decoder-only transformers (GPT-2 and Llama)."""

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp

ARCHITECTURES = ("gpt2", "llama")


class RopeScaling(NamedTuple):
  """Llama-3 style RoPE frequency scaling (a tuple, so configs stay hashable).

  Attributes:
    factor: how much the context is extended.
    low_freq_factor: wavelengths longer than original_len / low_freq_factor are scaled.
    high_freq_factor: wavelengths shorter than original_len / high_freq_factor are kept.
    original_max_position_embeddings: the context length of pre-training.
  """

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
  """Shape, numerics and architecture of a decoder-only transformer.

  Attributes:
    architecture: "gpt2" (LayerNorm, GELU MLP, biases, learned positions) or
      "llama" (RMSNorm, SwiGLU MLP, no biases, RoPE).
    vocab_size: number of token ids.
    num_layers: number of transformer blocks.
    num_heads: number of query heads.
    num_kv_heads: number of key/value heads (grouped-query attention when < num_heads).
    head_dim: size of each attention head.
    embed_dim: width of the residual stream.
    mlp_dim: hidden width of the MLP.
    max_seq_len: longest sequence (size of GPT-2's position table).
    norm_eps: epsilon of the LayerNorm / RMSNorm.
    tie_embeddings: compute logits with the transposed token embedding (no lm_head).
    rope_theta: RoPE base frequency (Llama only).
    rope_scaling: optional Llama-3 RoPE scaling; a RopeScaling, a 4-tuple or a mapping.
    dtype: compute dtype name, e.g. "float32" or "bfloat16". Logits are always float32.
    param_dtype: parameter dtype name.
    remat: rematerialise each block in the backward pass.
    scan_unroll: blocks per iteration of the layer scan (`jax.lax.scan`'s `unroll`); a value
      >= num_layers unrolls the whole stack. The parameters stay stacked either way. Unrolling
      lets XLA fuse across blocks and drop the scan's per-iteration slicing and stacking (the
      gradient of the 4-layer `make pretrain` model at context 64, batch 12 took 50 ms instead
      of 68 on a 2-core CPU); 1 keeps compile time independent of depth.
  """

  architecture: str
  vocab_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  embed_dim: int
  mlp_dim: int
  max_seq_len: int
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  tie_embeddings: bool
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  scan_unroll: int = 1

  def __post_init__(self):
    if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
      scaling = self.rope_scaling
      scaling = RopeScaling(**scaling) if isinstance(scaling, Mapping) else RopeScaling(*scaling)
      object.__setattr__(self, "rope_scaling", scaling)
    self._validate()

  def _validate(self):
    """Raises ValueError, naming the field, on an inconsistent config."""
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture ({self.architecture!r}) must be one of {ARCHITECTURES}")
    for name in ("vocab_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "embed_dim", "mlp_dim", "max_seq_len", "scan_unroll"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} ({value!r}) must be a positive integer")
    if self.norm_eps <= 0:
      raise ValueError(f"norm_eps ({self.norm_eps}) must be positive")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be divisible by "
                       f"num_kv_heads ({self.num_kv_heads})")
    if self.architecture == "gpt2":
      self._validate_gpt2()
    else:
      self._validate_llama()
    for name in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise ValueError(f"{name} ({getattr(self, name)!r}) is not a dtype name") from e

  def _validate_gpt2(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(f"embed_dim ({self.embed_dim}) is not divisible by "
                       f"num_heads ({self.num_heads})")
    if self.embed_dim != self.num_heads * self.head_dim:
      raise ValueError(f"head_dim ({self.head_dim}) must equal embed_dim // num_heads "
                       f"({self.embed_dim // self.num_heads}) for gpt2")
    if self.rope_scaling is not None:
      raise ValueError("rope_scaling must be None for gpt2 (it has learned positions)")

  def _validate_llama(self):
    if self.head_dim % 2:
      raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
    if self.rope_theta <= 0:
      raise ValueError(f"rope_theta ({self.rope_theta}) must be positive")
    scaling = self.rope_scaling
    if scaling is not None and scaling.high_freq_factor <= scaling.low_freq_factor:
      raise ValueError(f"rope_scaling.high_freq_factor ({scaling.high_freq_factor}) must "
                       f"exceed rope_scaling.low_freq_factor ({scaling.low_freq_factor})")

  @property
  def use_bias(self) -> bool:
    """Whether projections, MLP and norms carry biases (GPT-2)."""
    return self.architecture == "gpt2"

  @property
  def use_rope(self) -> bool:
    """Whether positions enter through RoPE (Llama) rather than a learned table (GPT-2)."""
    return self.architecture == "llama"

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The compute dtype as a jnp.dtype."""
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    """The parameter dtype as a jnp.dtype."""
    return jnp.dtype(self.param_dtype)

  def num_params(self) -> int:
    """Returns the exact number of parameters, counted analytically."""
    d, f, v = self.embed_dim, self.mlp_dim, self.vocab_size
    q_dim = self.num_heads * self.head_dim
    kv_dim = self.num_kv_heads * self.head_dim
    bias = self.use_bias
    attn = 2 * d * q_dim + 2 * d * kv_dim + bias * (q_dim + 2 * kv_dim + d)
    mlp = 2 * d * f + bias * (f + d) if self.architecture == "gpt2" else 3 * d * f
    norm = d * (1 + bias)
    block = attn + mlp + 2 * norm
    total = v * d + self.num_layers * block + norm
    if not self.use_rope:
      total += self.max_seq_len * d
    if not self.tie_embeddings:
      total += d * v
    return total
