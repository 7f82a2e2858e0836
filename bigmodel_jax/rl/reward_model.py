"""A learned reward model trained on preference pairs with the Bradley-Terry loss.

P(chosen > rejected) = sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Bradley and Terry, 1952), the
reward model of InstructGPT (Ouyang et al., 2022). r is the value-model architecture
(`value_model.ValueModel`: a transformer trunk with a scalar head) read at the last response
token. The pairs here come from a programmatic reward: two corrupted versions of the true answer,
the one the reward scores higher chosen (ties dropped), so the held-out pair accuracy measures
how well the learned model recovers the programmatic preference.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax.data.arithmetic import ArithmeticSource, encode_prompts
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.rl.rewards import RewardFn, arithmetic_reward


class PreferencePairs(NamedTuple):
  """int32 prompts [n, p] and two responses [n, t] each, `chosen` preferred to `rejected`."""

  prompts: np.ndarray
  chosen: np.ndarray
  rejected: np.ndarray


def _corrupt(answers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Replaces a random number (0 to all) of the answer digits by random digits."""
  digits = answers[:, :-1]
  flips = rng.random(digits.shape) < rng.random((len(answers), 1))
  random_digits = rng.integers(ord("0"), ord("9") + 1, size=digits.shape)
  return np.concatenate([np.where(flips, random_digits, digits), answers[:, -1:]], axis=1)


def preference_pairs(source: ArithmeticSource, count: int, seed: int) -> PreferencePairs:
  """Up to `count` pairs labelled by `rewards.arithmetic_reward` (ties dropped).

  Args:
    source: the problems (a train or a validation split).
    count: how many candidate pairs to draw.
    seed: the seed of the problems and of the corruptions.

  Returns:
    The pairs whose two responses score differently.
  """
  rng = np.random.default_rng(seed)
  problems = [source.problem(int(i)) for i in rng.integers(0, len(source), count)]
  prompts = encode_prompts(problems, ByteTokenizer())
  answers = np.asarray([[ord(ch) for ch in p.answer + "\n"] for p in problems], np.int32)
  first, second = _corrupt(answers, rng), _corrupt(answers, rng)
  reward = arithmetic_reward(source.digits)
  mask = np.ones(answers.shape, bool)
  r1, r2 = (np.asarray(reward(prompts, y, mask)) for y in (first, second))
  keep = r1 != r2
  chosen = np.where((r1 > r2)[:, None], first, second)[keep]
  rejected = np.where((r1 > r2)[:, None], second, first)[keep]
  return PreferencePairs(prompts[keep], chosen, rejected)


def sequence_scores(graphdef: nnx.GraphDef, params, prompts: jax.Array, responses: jax.Array,
                    mask: jax.Array) -> jax.Array:
  """float32[n]: the reward model's score at the last unmasked response token."""
  tokens = jnp.concatenate([prompts, responses], axis=1)
  values = nnx.merge(graphdef, params)(tokens)
  last = prompts.shape[1] + jnp.maximum(mask.sum(axis=1), 1) - 1
  return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


def pair_margins(graphdef: nnx.GraphDef, params, pairs: PreferencePairs) -> jax.Array:
  """float32[n]: r(x, y_chosen) - r(x, y_rejected) of every pair."""
  mask = jnp.ones(pairs.chosen.shape, bool)
  return (sequence_scores(graphdef, params, pairs.prompts, pairs.chosen, mask)
          - sequence_scores(graphdef, params, pairs.prompts, pairs.rejected, mask))


def bradley_terry_sums(graphdef: nnx.GraphDef, params, pairs: PreferencePairs,
                       weights: jax.Array) -> dict[str, jax.Array]:
  """The Bradley-Terry loss and the pair accuracy of a batch, as weighted sums.

  Args:
    graphdef: the reward model's graph definition.
    params: its parameters.
    pairs: the batch of pairs.
    weights: float32[n], each pair's weight (0 for a padding row).

  Returns:
    {"loss": sum of -w log sigmoid(margin), "pair_accuracy": sum of w [margin > 0],
    "weight": sum of w}.
  """
  margin = pair_margins(graphdef, params, pairs)
  return {"loss": -(weights * jax.nn.log_sigmoid(margin)).sum(),
          "pair_accuracy": (weights * (margin > 0)).sum(), "weight": weights.sum()}


def bradley_terry_loss(graphdef: nnx.GraphDef, params, pairs: PreferencePairs
                       ) -> tuple[jax.Array, jax.Array]:
  """(-mean log sigmoid(r_chosen - r_rejected), pair accuracy) of a batch of pairs."""
  sums = bradley_terry_sums(graphdef, params, pairs, jnp.ones(len(pairs.prompts)))
  return sums["loss"] / sums["weight"], sums["pair_accuracy"] / sums["weight"]


def learned_reward(graphdef: nnx.GraphDef, params) -> RewardFn:
  """The trained reward model as a reward function for the RL steps."""

  def reward(prompts: jax.Array, responses: jax.Array, mask: jax.Array) -> jax.Array:
    return sequence_scores(graphdef, params, prompts, responses, mask)

  return reward
