"""Per-token log-probabilities of responses under a policy, and masked means."""

import jax
import jax.numpy as jnp
from flax import nnx


def response_log_probs(graphdef: nnx.GraphDef, params, prompts: jax.Array,
                       responses: jax.Array) -> jax.Array:
  """float32[n, t]: log pi(response_t | prompt, response_<t) for every response token.

  One forward pass over prompt + response (teacher forcing); the logits at position p - 1 + t
  predict response token t.

  Args:
    graphdef: the model's graph definition.
    params: its parameters (pure dict).
    prompts: int32[n, p].
    responses: int32[n, t].

  Returns:
    The log-probabilities, float32[n, t].
  """
  tokens = jnp.concatenate([prompts, responses], axis=1)
  logits = nnx.merge(graphdef, params)(tokens)[:, prompts.shape[1] - 1:-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, responses[..., None], axis=-1)[..., 0]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `x` over the positions where `mask` is True (0 if there are none)."""
  mask = mask.astype(x.dtype)
  return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)
