"""PPO for language models (Schulman et al., 2017; Ouyang et al., "InstructGPT", 2022).

Per token: reward r_t = -beta * (log pi(y_t) - log pi_ref(y_t)), plus the clipped sequence
reward on the last token; a learned value model gives V_t; GAE (gamma, lambda) gives advantages
(whitened over the batch) and returns. Each rollout batch is used for `options.epochs` full-batch
steps of the clipped-ratio policy loss and the clipped value loss, with separate optimizers.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.rl.logprobs import masked_mean, response_log_probs
from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.policy_gradient import make_generate, make_reference, rollout_metrics
from bigmodel_jax.rl.returns import generalized_advantages, last_token_weights
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Rollout, Scores, score
from bigmodel_jax.rl.state import RLState


def response_values(value_graphdef: nnx.GraphDef, value_params, prompts: jax.Array,
                    responses: jax.Array) -> jax.Array:
  """float32[n, t]: V of the prefix before each response token."""
  tokens = jnp.concatenate([prompts, responses], axis=1)
  values = nnx.merge(value_graphdef, value_params)(tokens)
  return values[:, prompts.shape[1] - 1:-1]


def token_rewards(sequence_reward: jax.Array, log_ratio: jax.Array, mask: jax.Array, *,
                  kl_coef: float, reward_clip: float) -> jax.Array:
  """float32[n, t]: -beta * log-ratio per token, plus the clipped reward on the last token."""
  last = last_token_weights(mask, 0.0)  # 1 on the last unmasked token, 0 elsewhere
  clipped = jnp.clip(sequence_reward, -reward_clip, reward_clip)
  return (last * clipped[:, None] - kl_coef * log_ratio) * mask


def whiten(x: jax.Array, mask: jax.Array) -> jax.Array:
  """(x - mean) / std over the unmasked entries."""
  mean = masked_mean(x, mask)
  std = jnp.sqrt(masked_mean((x - mean) ** 2, mask))
  return (x - mean) / (std + 1e-8) * mask


def clipped_value_loss(values, old_values, returns, mask, value_clip: float) -> jax.Array:
  """0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), averaged over tokens."""
  clipped = old_values + jnp.clip(values - old_values, -value_clip, value_clip)
  return 0.5 * masked_mean(jnp.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def clipped_policy_loss(log_probs, old_log_probs, advantages, mask, clip_ratio: float):
  """-min(ratio A, clip(ratio, 1 +- eps) A), averaged over tokens."""
  ratio = jnp.exp(log_probs - old_log_probs)
  clipped = jnp.clip(ratio, 1 - clip_ratio, 1 + clip_ratio)
  return -masked_mean(jnp.minimum(ratio * advantages, clipped * advantages), mask)


def make_ppo_update(graphdef: nnx.GraphDef, value_graphdef: nnx.GraphDef,
                    optimizer: optax.GradientTransformation,
                    value_optimizer: optax.GradientTransformation,
                    options: RLOptions) -> Callable:
  """update(state, rollout, scores, ref_log_probs) -> (state, metrics) for PPO."""

  def update(state: RLState, rollout: Rollout, scores: Scores, ref_log_probs: jax.Array):
    prompts, tokens, mask = rollout.prompts, rollout.sampled.tokens, rollout.sampled.mask
    old_log_probs = response_log_probs(graphdef, state.params, prompts, tokens)
    old_values = response_values(value_graphdef, state.value_params, prompts, tokens)
    log_ratio = old_log_probs - ref_log_probs
    rewards = token_rewards(scores.sampled, log_ratio, mask, kl_coef=options.kl_coef,
                            reward_clip=options.reward_clip)
    advantages, returns = generalized_advantages(rewards, old_values, mask, gamma=options.gamma,
                                                 lam=options.gae_lambda)
    advantages = whiten(advantages, mask)

    def policy_loss(params):
      log_probs = response_log_probs(graphdef, params, prompts, tokens)
      return clipped_policy_loss(log_probs, old_log_probs, advantages, mask, options.clip_ratio)

    def value_loss(value_params):
      values = response_values(value_graphdef, value_params, prompts, tokens)
      return clipped_value_loss(values, old_values, returns, mask, options.value_clip)

    def epoch(carry, _):
      params, opt_state, value_params, value_opt_state = carry
      loss, grads = jax.value_and_grad(policy_loss)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      v_loss, v_grads = jax.value_and_grad(value_loss)(value_params)
      v_updates, value_opt_state = value_optimizer.update(v_grads, value_opt_state, value_params)
      carry = (optax.apply_updates(params, updates), opt_state,
               optax.apply_updates(value_params, v_updates), value_opt_state)
      return carry, (loss, v_loss, optax.tree.norm(grads))

    carry = (state.params, state.opt_state, state.value_params, state.value_opt_state)
    carry, (losses, value_losses, grad_norms) = jax.lax.scan(epoch, carry, length=options.epochs)
    params, opt_state, value_params, value_opt_state = carry
    metrics = rollout_metrics(rollout, scores, log_ratio)
    metrics.update(loss=losses[0], value_loss=value_losses[0], grad_norm=grad_norms[0])
    return state._replace(step=state.step + 1, params=params, opt_state=opt_state,
                          value_params=value_params, value_opt_state=value_opt_state), metrics

  return update


def make_ppo(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
             reward_fn: RewardFn, options: RLOptions, *, value_graphdef: nnx.GraphDef,
             value_optimizer: optax.GradientTransformation) -> Method:
  """PPO; the state needs value_params and value_opt_state (`rl.state.init_state`).

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    reward_fn: the reward of a response.
    options: the RL options (gamma, gae_lambda, clip_ratio, value_clip, epochs).
    value_graphdef: the value model's graph definition (`value_model.init_value_params`).
    value_optimizer: the value model's optimizer.

  Returns:
    The method's phases.
  """
  return Method(
      generate=make_generate(graphdef, options, with_greedy=False),
      reward=lambda rollout: score(reward_fn, rollout, options.samples_per_prompt),
      reference=make_reference(graphdef),
      update=make_ppo_update(graphdef, value_graphdef, optimizer, value_optimizer, options))
