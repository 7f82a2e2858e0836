"""Token-level losses for language models.

The cross-entropy is returned as a (sum, weight) pair rather than a mean so that gradient
accumulation and multi-batch evaluations divide once, by the total number of tokens, and stay
exactly equal to the loss of the whole batch.
"""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Summed next-token cross-entropy in nats.

  Args:
    logits: [..., vocab] unnormalised log-probabilities (any float dtype; computed in float32).
    targets: [...] integer token ids.
    weights: [...] per-token weights, 0 for padding.

  Returns:
    (sum of weighted per-token losses, sum of weights), both float32 scalars.
  """
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets
  )
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_token * weights), jnp.sum(weights)
