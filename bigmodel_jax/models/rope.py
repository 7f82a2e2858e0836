"""Rotary position embeddings (RoPE), with optional Llama-3 frequency scaling.

Uses the "rotate half" layout of the Hugging Face Llama implementation: the first and second
halves of each head are the two coordinates of the rotated pairs.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.models.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float,
                        scaling: RopeScaling | None = None) -> np.ndarray:
  """The rotation frequency of each pair of head coordinates.

  Args:
    head_dim: size of an attention head (even).
    theta: RoPE base.
    scaling: optional Llama-3 scaling of the low frequencies.

  Returns:
    float32[head_dim // 2], a static numpy constant.
  """
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  if scaling is not None:
    inv_freq = _llama3_scale(inv_freq, scaling)
  return inv_freq.astype(np.float32)


def _llama3_scale(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
  """Llama-3 scaling: long wavelengths slowed by `factor`, short ones kept, smooth between."""
  original_len = scaling.original_max_position_embeddings
  low_freq_wavelen = original_len / scaling.low_freq_factor
  high_freq_wavelen = original_len / scaling.high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  smooth = (original_len / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  smoothed = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates queries or keys by their positions.

  Args:
    x: [batch, length, heads, head_dim] queries or keys.
    positions: int32[batch, length] token positions.
    inv_freq: float32[head_dim // 2] from `inverse_frequencies`.

  Returns:
    The rotated array, same shape and dtype as `x` (computed in float32).
  """
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, Dh/2]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)
