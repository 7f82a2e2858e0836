"""What one RL step generates and scores: the responses, their rewards, the reference log-probs.

A method is four phases, each a pure function, composed into one jittable step; the experiment
also jits them apart to time generation, reward, reference and update separately.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from bigmodel_jax.models.sampling import Generation
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.state import RLState


class Rollout(NamedTuple):
  """Responses of one step.

  Attributes:
    prompts: int32[n, p], each prompt repeated once per sample (rows i*k .. i*k+k-1 share one).
    sampled: the n sampled responses.
    greedy: greedy responses of the distinct prompts (ReMax), or None.
  """

  prompts: jax.Array
  sampled: Generation
  greedy: Generation | None = None


class Scores(NamedTuple):
  """float32 rewards of the sampled responses [n] and of the greedy ones [n / k] (or None)."""

  sampled: jax.Array
  greedy: jax.Array | None = None


def score(reward_fn: RewardFn, rollout: Rollout, samples_per_prompt: int) -> Scores:
  """Applies the reward function to the sampled (and greedy) responses."""
  sampled = reward_fn(rollout.prompts, rollout.sampled.tokens, rollout.sampled.mask)
  if rollout.greedy is None:
    return Scores(sampled)
  distinct = rollout.prompts[::samples_per_prompt]
  return Scores(sampled, reward_fn(distinct, rollout.greedy.tokens, rollout.greedy.mask))


class Method(NamedTuple):
  """An RL method as four pure phases.

  Attributes:
    generate: (state, prompts, key) -> Rollout.
    reward: (rollout) -> Scores.
    reference: (state, rollout) -> float32[n, t] reference log-probs of the sampled responses.
    update: (state, rollout, scores, ref_log_probs) -> (state, metrics).
  """

  generate: Callable
  reward: Callable
  reference: Callable
  update: Callable

  def step(self, state: RLState, prompts: jax.Array, key: jax.Array
           ) -> tuple[RLState, dict[str, jax.Array]]:
    """One RL step: (state, prompts int32[b, p], key) -> (state, metrics); pure, jittable."""
    rollout = self.generate(state, prompts, key)
    scores = self.reward(rollout)
    ref_log_probs = self.reference(state, rollout)
    return self.update(state, rollout, scores, ref_log_probs)
