"""Hyper-parameters of the decoder-only transformer: its shape, numerics and features.

The architecture is data: which norm, MLP and position encoding, whether there are biases,
QK-norm and soft-caps. Named feature sets (GPT-2, Llama, ...) live in `models/presets.py`; nothing
here or in the model code looks at a name.
"""

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")
FEATURES = ("norm", "mlp", "positions", "use_bias", "qk_norm", "attn_logit_softcap",
            "final_logit_softcap")


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
  """Shape, numerics and features of a decoder-only transformer.

  Attributes:
    norm: "layernorm" (scale, and a bias iff use_bias) or "rmsnorm" (scale only).
    mlp: "gelu" (down(gelu_tanh(up(x)))) or "swiglu" (down(silu(gate(x)) * up(x))).
    positions: "learned" (a position table added to the token embedding) or "rope".
    use_bias: whether the attention and MLP projections (and LayerNorms) carry biases.
    qk_norm: RMSNorm (a learned scale of size head_dim, shared by the heads) on each query and
      key head before RoPE, as in Qwen3 and Gemma 3.
    attn_logit_softcap: None, or c > 0: attention logits become c * tanh(logits / c) (Gemma 2).
    final_logit_softcap: None, or c > 0: output logits become c * tanh(logits / c) (Gemma 2).
    vocab_size: number of token ids.
    num_layers: number of transformer blocks.
    num_heads: number of query heads.
    num_kv_heads: number of key/value heads (grouped-query attention when < num_heads).
    head_dim: size of each attention head.
    embed_dim: width of the residual stream.
    mlp_dim: hidden width of the MLP.
    max_seq_len: longest sequence (size of the learned position table).
    norm_eps: epsilon of the LayerNorm / RMSNorm.
    tie_embeddings: compute logits with the transposed token embedding (no lm_head).
    rope_theta: RoPE base frequency (RoPE only).
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

  norm: str
  mlp: str
  positions: str
  use_bias: bool
  qk_norm: bool = False
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
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
    self._validate_features()
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
    if self.use_rope:
      self._validate_rope()
    elif self.rope_scaling is not None:
      raise ValueError("rope_scaling must be None with learned positions")
    for name in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise ValueError(f"{name} ({getattr(self, name)!r}) is not a dtype name") from e

  def _validate_rope(self):
    if self.head_dim % 2:
      raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
    if self.rope_theta <= 0:
      raise ValueError(f"rope_theta ({self.rope_theta}) must be positive")
    scaling = self.rope_scaling
    if scaling is not None and scaling.high_freq_factor <= scaling.low_freq_factor:
      raise ValueError(f"rope_scaling.high_freq_factor ({scaling.high_freq_factor}) must "
                       f"exceed rope_scaling.low_freq_factor ({scaling.low_freq_factor})")

  def _validate_features(self):
    """Raises ValueError, naming the field, on an unknown feature value."""
    for name, choices in (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS)):
      if getattr(self, name) not in choices:
        raise ValueError(f"{name} ({getattr(self, name)!r}) must be one of {choices}")
    for name in ("use_bias", "qk_norm"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"{name} ({getattr(self, name)!r}) must be a bool")
    for name in ("attn_logit_softcap", "final_logit_softcap"):
      cap = getattr(self, name)
      if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float)
                              or not cap > 0):
        raise ValueError(f"{name} ({cap!r}) must be None or a positive number")

  @property
  def use_rope(self) -> bool:
    """Whether positions enter through RoPE rather than a learned table."""
    return self.positions == "rope"

  @property
  def norm_bias(self) -> bool:
    """Whether the norms carry a bias (LayerNorm with use_bias)."""
    return self.norm == "layernorm" and self.use_bias

  def features(self) -> dict:
    """The architecture features (FEATURES) of this config, by name."""
    return {name: getattr(self, name) for name in FEATURES}

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
    hidden = 1 if self.mlp == "gelu" else 2  # up, or gate and up
    mlp = (hidden + 1) * d * f + bias * (hidden * f + d)
    norm = d * (1 + self.norm_bias)
    block = attn + mlp + 2 * norm + 2 * self.qk_norm * self.head_dim
    total = v * d + self.num_layers * block + norm
    if not self.use_rope:
      total += self.max_seq_len * d
    if not self.tie_embeddings:
      total += d * v
    return total
