"""REINFORCE (Williams, "Simple statistical gradient-following algorithms", 1992), with no
baseline or with the batch-mean reward as baseline."""

import jax
import optax
from flax import nnx

from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.policy_gradient import make_policy_gradient_method
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Scores


def no_baseline_advantage(scores: Scores, samples_per_prompt: int) -> jax.Array:
  """The reward itself."""
  del samples_per_prompt
  return scores.sampled


def batch_mean_advantage(scores: Scores, samples_per_prompt: int) -> jax.Array:
  """The reward minus the batch's mean reward."""
  del samples_per_prompt
  return scores.sampled - scores.sampled.mean()


def make_reinforce(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                   reward_fn: RewardFn, options: RLOptions, *,
                   mean_baseline: bool = False) -> Method:
  """REINFORCE; `.step(state, prompts, key) -> (state, metrics)`.

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    reward_fn: the reward of a response.
    options: the RL options.
    mean_baseline: subtract the batch-mean reward.

  Returns:
    The method's phases.
  """
  advantage = batch_mean_advantage if mean_baseline else no_baseline_advantage
  return make_policy_gradient_method(graphdef, optimizer, reward_fn, options, advantage)
