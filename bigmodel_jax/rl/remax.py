"""ReMax (Li et al., "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method
for Aligning Large Language Models", ICML 2024).

REINFORCE whose baseline is the reward of the policy's own greedy response to the same prompt:
A = clip(r(x, y) - r(x, y_greedy), -c, c). The greedy response does not depend on the sample,
so the estimator stays unbiased; no value model is trained or stored. With k samples per prompt
the k samples share one greedy baseline (as verl does).
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.policy_gradient import make_policy_gradient_method
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rollout import Method, Scores


def greedy_baseline_advantage(scores: Scores, samples_per_prompt: int) -> jax.Array:
  """float32[n]: r(x, y) - r(x, y_greedy), the greedy reward repeated over the k samples."""
  return scores.sampled - jnp.repeat(scores.greedy, samples_per_prompt)


def make_remax(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
               reward_fn: RewardFn, options: RLOptions) -> Method:
  """ReMax; `make_remax(...).step` is remax_step(state, prompts, key) -> (state, metrics).

  Args:
    graphdef: the policy's graph definition.
    optimizer: the policy optimizer.
    reward_fn: the reward of a response.
    options: the RL options (authors: kl_coef 0.1, gamma 1.0, reward_clip 5, top-p 0.9).

  Returns:
    The method's phases.
  """
  return make_policy_gradient_method(graphdef, optimizer, reward_fn, options,
                                     greedy_baseline_advantage, with_greedy=True)
