"""Per-token returns of the policy-gradient methods, and generalised advantage estimation."""

import jax
import jax.numpy as jnp


def last_token_weights(mask: jax.Array, gamma: float) -> jax.Array:
  """float32[n, t]: gamma^(T - 1 - t) on the T unmasked tokens of each response, 0 elsewhere.

  The sequence reward arrives at the last response token; token t sees it discounted by the
  number of tokens after it.
  """
  mask = mask.astype(jnp.float32)
  remaining = jnp.flip(jnp.cumsum(jnp.flip(mask, axis=1), axis=1), axis=1) - 1.0
  return jnp.where(mask > 0, gamma ** jnp.maximum(remaining, 0.0), 0.0)


def sequence_returns(advantage: jax.Array, log_ratio: jax.Array, mask: jax.Array, *,
                     kl_coef: float, gamma: float) -> jax.Array:
  """R_t = -kl_coef * log_ratio_t + gamma^(T - t) * advantage, on unmasked tokens.

  The return of ReMax (Li et al., 2024, Algorithm 1), used by every baseline-corrected REINFORCE
  variant here with its own sequence advantage.

  Args:
    advantage: float32[n] per-response advantage (reward minus baseline, clipped).
    log_ratio: float32[n, t] log pi(y_t) - log pi_ref(y_t).
    mask: bool[n, t] response tokens (EOS included).
    kl_coef: beta, the per-token KL penalty.
    gamma: the discount.

  Returns:
    float32[n, t] returns, 0 on masked-out tokens.
  """
  weights = last_token_weights(mask, gamma)
  return (weights * advantage[:, None] - kl_coef * log_ratio) * mask


def generalized_advantages(rewards: jax.Array, values: jax.Array, mask: jax.Array, *,
                           gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
  """GAE (Schulman et al., "High-Dimensional Continuous Control Using GAE", ICLR 2016).

  delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}, with V and A zero
  past the end of the response.

  Args:
    rewards: float32[n, t] per-token rewards.
    values: float32[n, t] value estimates V(s_t) before emitting token t.
    mask: bool[n, t] response tokens.
    gamma: discount.
    lam: GAE lambda.

  Returns:
    (advantages, returns = advantages + values), both float32[n, t], 0 on masked-out tokens.
  """
  mask = mask.astype(jnp.float32)
  values = values * mask
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
  deltas = (rewards + gamma * next_values - values) * mask

  def backward(carry, delta_and_mask):
    delta, m = delta_and_mask
    advantage = delta + gamma * lam * carry * m
    return advantage, advantage

  _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[:, 0]),
                               (deltas.T, jnp.concatenate([mask[:, 1:], mask[:, :1] * 0], 1).T),
                               reverse=True)
  advantages = advantages.T * mask
  return advantages, (advantages + values) * mask
