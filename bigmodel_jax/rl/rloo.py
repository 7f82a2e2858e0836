"""RLOO, REINFORCE leave-one-out (Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for
Free!", 2019; Ahmadian et al., "Back to Basics", ACL 2024): the baseline of each of the k samples
of a prompt is the mean reward of the other k - 1."""

import jax
import optax
from flax import nnx

from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.policy_gradient import make_policy_gradient_method
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Scores


def leave_one_out_advantage(scores: Scores, samples_per_prompt: int) -> jax.Array:
  """r_i - mean_{j != i} r_j within each prompt's group of k samples."""
  k = samples_per_prompt
  groups = scores.sampled.reshape(-1, k)
  others = (groups.sum(axis=1, keepdims=True) - groups) / (k - 1)
  return (groups - others).reshape(-1)


def make_rloo(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
              reward_fn: RewardFn, options: RLOptions) -> Method:
  """RLOO; needs options.samples_per_prompt >= 2.

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    reward_fn: the reward of a response.
    options: the RL options.

  Returns:
    The method's phases.
  """
  if options.samples_per_prompt < 2:
    raise ValueError(f"rloo needs samples_per_prompt >= 2, got {options.samples_per_prompt}")
  return make_policy_gradient_method(graphdef, optimizer, reward_fn, options,
                                     leave_one_out_advantage)
