"""The REINFORCE-family step (Williams, 1992) with a pluggable sequence baseline.

Per response: advantage A = clip(r - baseline, -c, c); per token
R_t = -beta * (log pi(y_t) - log pi_ref(y_t)) + gamma^(T - t) A, and the loss is
-sum_t stop_grad(R_t) * log pi(y_t) * mask_t / sum(mask) (ReMax, Li et al., 2024). With a
ratio clip (GRPO) the log-probability becomes the clipped importance ratio of PPO. ReMax,
REINFORCE, RLOO and GRPO differ only in the baseline (and GRPO in the ratio clip).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.models.sampling import generate, generate_sampled_and_greedy
from bigmodel_jax.rl.logprobs import masked_mean, response_log_probs
from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.returns import sequence_returns
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Rollout, Scores, score
from bigmodel_jax.rl.state import RLState

AdvantageFn = Callable[[Scores, int], jax.Array]


def make_generate(graphdef: nnx.GraphDef, options: RLOptions, *, with_greedy: bool) -> Callable:
  """(state, prompts, key) -> Rollout: k samples per prompt, plus greedy responses if asked."""
  k = options.samples_per_prompt

  def generate_phase(state: RLState, prompts: jax.Array, key: jax.Array) -> Rollout:
    repeated = jnp.repeat(prompts, k, axis=0)
    if with_greedy:
      sampled, greedy = generate_sampled_and_greedy(graphdef, state.params, prompts, key,
                                                    options.sampling, k)
      return Rollout(repeated, sampled, greedy)
    return Rollout(repeated, generate(graphdef, state.params, repeated, key, options.sampling))

  return generate_phase


def make_reference(graphdef: nnx.GraphDef) -> Callable:
  """(state, rollout) -> the reference policy's log-probs of the sampled responses."""

  def reference(state: RLState, rollout: Rollout) -> jax.Array:
    return response_log_probs(graphdef, state.ref_params, rollout.prompts,
                              rollout.sampled.tokens)

  return reference


def rollout_metrics(rollout: Rollout, scores: Scores, log_ratio: jax.Array) -> dict:
  """Sampled (and greedy) reward, KL to the reference (per response), response length."""
  mask = rollout.sampled.mask
  metrics = {"sampled_reward": scores.sampled.mean(),
             "kl": (log_ratio * mask).sum(axis=1).mean(),
             "response_length": rollout.sampled.lengths.mean()}
  if scores.greedy is not None:
    metrics["greedy_reward"] = scores.greedy.mean()
  return metrics


def _surrogate(log_probs, old_log_probs, returns, mask, clip_ratio: float | None):
  """-mean over tokens of R_t log pi (no clip) or of PPO's clipped ratio objective."""
  if clip_ratio is None:
    return -masked_mean(returns * log_probs, mask)
  ratio = jnp.exp(log_probs - old_log_probs)
  clipped = jnp.clip(ratio, 1 - clip_ratio, 1 + clip_ratio)
  return -masked_mean(jnp.minimum(ratio * returns, clipped * returns), mask)


def make_update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                options: RLOptions, advantage_fn: AdvantageFn, *,
                clip_ratio: float | None = None) -> Callable:
  """The update phase: `options.epochs` optimizer steps on the returns of one rollout.

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    options: the RL options.
    advantage_fn: (scores, samples_per_prompt) -> float32[n] advantage before clipping.
    clip_ratio: None for plain REINFORCE-style gradients; epsilon for the clipped ratio.

  Returns:
    update(state, rollout, scores, ref_log_probs) -> (state, metrics).
  """
  if clip_ratio is None and options.epochs != 1:
    raise ValueError(f"epochs ({options.epochs}) must be 1 without a ratio clip (on-policy)")

  def update(state: RLState, rollout: Rollout, scores: Scores, ref_log_probs: jax.Array):
    prompts, tokens, mask = rollout.prompts, rollout.sampled.tokens, rollout.sampled.mask
    c = options.reward_clip
    advantage = jnp.clip(advantage_fn(scores, options.samples_per_prompt), -c, c)
    # With one epoch the sampling policy is the current one: its log-probs come from the same
    # forward pass as the gradient (stop_gradient), which saves a pass.
    rollout_log_probs = None
    if options.epochs > 1:
      rollout_log_probs = response_log_probs(graphdef, state.params, prompts, tokens)

    def loss_fn(params):
      log_probs = response_log_probs(graphdef, params, prompts, tokens)
      old_log_probs = (jax.lax.stop_gradient(log_probs) if rollout_log_probs is None
                       else rollout_log_probs)
      log_ratio = old_log_probs - ref_log_probs
      returns = sequence_returns(advantage, log_ratio, mask, kl_coef=options.kl_coef,
                                 gamma=options.gamma)
      return _surrogate(log_probs, old_log_probs, returns, mask, clip_ratio), log_ratio

    def epoch(carry, _):
      params, opt_state = carry
      (loss, log_ratio), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return ((optax.apply_updates(params, updates), opt_state),
              (loss, optax.tree.norm(grads), log_ratio))

    (params, opt_state), (losses, grad_norms, log_ratios) = jax.lax.scan(
        epoch, (state.params, state.opt_state), length=options.epochs)
    metrics = rollout_metrics(rollout, scores, log_ratios[0])
    metrics.update(loss=losses[0], grad_norm=grad_norms[0], advantage_mean=advantage.mean(),
                   advantage_std=advantage.std())
    return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return update


def make_policy_gradient_method(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                                reward_fn: RewardFn, options: RLOptions,
                                advantage_fn: AdvantageFn, *, with_greedy: bool = False,
                                clip_ratio: float | None = None) -> Method:
  """A REINFORCE-family method from its baseline (see the module docstring)."""
  return Method(
      generate=make_generate(graphdef, options, with_greedy=with_greedy),
      reward=lambda rollout: score(reward_fn, rollout, options.samples_per_prompt),
      reference=make_reference(graphdef),
      update=make_update(graphdef, optimizer, options, advantage_fn, clip_ratio=clip_ratio))
