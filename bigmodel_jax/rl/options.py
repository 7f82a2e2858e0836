"""Options shared by every RL method."""

from typing import NamedTuple

from bigmodel_jax.models.sampling import SamplingOptions


class RLOptions(NamedTuple):
  """Static options of an RL step.

  Attributes:
    sampling: how responses are drawn (ReMax authors: temperature 1.0, top-p 0.9).
    kl_coef: beta, the per-token log-ratio penalty added to the return.
    gamma: discount of the sequence reward over response tokens (1.0: none).
    reward_clip: c, the advantage (ReMax: reward minus baseline) is clipped to [-c, c].
    samples_per_prompt: k sampled responses per prompt.
    clip_ratio: PPO / GRPO ratio clip epsilon.
    epochs: optimizer steps per rollout batch (PPO, GRPO); 1 for REINFORCE, RLOO and ReMax.
    gae_lambda: PPO's GAE lambda.
    value_clip: PPO's value clip.
  """

  sampling: SamplingOptions
  kl_coef: float = 0.1
  gamma: float = 1.0
  reward_clip: float = 5.0
  samples_per_prompt: int = 1
  clip_ratio: float = 0.2
  epochs: int = 1
  gae_lambda: float = 0.95
  value_clip: float = 0.2
