"""Temperature, top-k and nucleus (top-p) filters on next-token logits.

Top-p follows Holtzman et al., "The Curious Case of Neural Text Degeneration" (ICLR 2020): keep
the smallest set of most likely tokens whose probability reaches p. Filtered-out tokens get
-inf logits, so `jax.random.categorical` never draws them. Written here rather than taken from a
library because neither optax nor flax ships sampling filters for NNX models.
"""

import jax
import jax.numpy as jnp


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits of the last axis (ties with the k-th are kept); k <= 0 keeps all.

  Args:
    logits: float[..., vocab].
    k: how many tokens to keep.

  Returns:
    The logits with the others set to -inf.
  """
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose total probability is >= p.

  The most likely token is always kept; p >= 1 keeps all.

  Args:
    logits: float[..., vocab].
    p: the nucleus mass, in (0, 1].

  Returns:
    The logits with the tokens outside the nucleus set to -inf.
  """
  if not 0 < p <= 1:
    raise ValueError(f"top_p ({p}) must be in (0, 1]")
  if p >= 1:
    return logits
  ordered = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
  probs = jax.nn.softmax(ordered, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  kept = jnp.where(mass_before < p, ordered, jnp.inf)
  threshold = jnp.min(kept, axis=-1, keepdims=True)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def filter_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Temperature, then top-k, then top-p: the logits to draw the next token from.

  Args:
    logits: float[..., vocab].
    temperature: divides the logits; must be positive (use greedy decoding for 0).
    top_k: keep the k most likely tokens (0: all).
    top_p: keep the nucleus of mass p (1: all).

  Returns:
    float32 filtered logits.
  """
  if temperature <= 0:
    raise ValueError(f"temperature ({temperature}) must be positive; decode greedily for 0")
  logits = logits.astype(jnp.float32) / temperature
  return top_p_filter(top_k_filter(logits, top_k), top_p)
