"""GRPO (Shao et al., "DeepSeekMath", 2024): the advantage of each of the k samples of a prompt
is its reward standardised within the group, (r_i - mean) / (std + eps), optimised with PPO's
clipped importance ratio. As in the other methods here, the KL to the reference enters the
per-token return (DeepSeekMath puts a k3 estimate of it in the loss instead)."""

import jax
import optax
from flax import nnx

from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.policy_gradient import make_policy_gradient_method
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Scores

EPSILON = 1e-6


def group_normalized_advantage(scores: Scores, samples_per_prompt: int) -> jax.Array:
  """(r_i - group mean) / (group std + eps) within each prompt's k samples."""
  groups = scores.sampled.reshape(-1, samples_per_prompt)
  mean = groups.mean(axis=1, keepdims=True)
  std = groups.std(axis=1, keepdims=True)
  return ((groups - mean) / (std + EPSILON)).reshape(-1)


def make_grpo(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
              reward_fn: RewardFn, options: RLOptions) -> Method:
  """GRPO; needs options.samples_per_prompt >= 2; options.epochs updates per rollout.

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    reward_fn: the reward of a response.
    options: the RL options (clip_ratio, epochs).

  Returns:
    The method's phases.
  """
  if options.samples_per_prompt < 2:
    raise ValueError(f"grpo needs samples_per_prompt >= 2, got {options.samples_per_prompt}")
  return make_policy_gradient_method(graphdef, optimizer, reward_fn, options,
                                     group_normalized_advantage,
                                     clip_ratio=options.clip_ratio)
