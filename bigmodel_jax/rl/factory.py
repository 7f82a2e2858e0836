"""Builds an RL method and its initial state from a name (the config's `rl.method`)."""

import functools

import optax
from flax import nnx

from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.rl.grpo import make_grpo
from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.ppo import make_ppo
from bigmodel_jax.rl.reinforce import make_reinforce
from bigmodel_jax.rl.remax import make_remax
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.rl.rloo import make_rloo
from bigmodel_jax.rl.rollout import Method
from bigmodel_jax.rl.state import RLState, init_state
from bigmodel_jax.rl.value_model import init_value_params

METHODS = {
    "remax": make_remax,
    "reinforce": make_reinforce,
    "reinforce_mean": functools.partial(make_reinforce, mean_baseline=True),
    "rloo": make_rloo,
    "grpo": make_grpo,
    "ppo": make_ppo,
}


def make_method(name: str, model_config: TransformerConfig, graphdef: nnx.GraphDef, params,
                optimizer: optax.GradientTransformation, reward_fn: RewardFn,
                options: RLOptions) -> tuple[Method, RLState]:
  """The method named `name` and its initial state, starting from the policy `params`.

  PPO's value model starts from a copy of the policy (trunk) and a zero head, and is trained
  with the same optimizer settings.

  Args:
    name: one of METHODS.
    model_config: the policy's model config.
    graphdef: the policy's graph definition.
    params: the starting policy parameters (pure dict); also the reference.
    optimizer: the optimizer (of the policy, and of PPO's value model).
    reward_fn: the reward of a response.
    options: the RL options.

  Returns:
    (method, initial state); `method.step(state, prompts, key)` is the jittable step.
  """
  if name not in METHODS:
    raise ValueError(f"rl.method ({name!r}) must be one of {sorted(METHODS)}")
  if name != "ppo":
    return METHODS[name](graphdef, optimizer, reward_fn, options), init_state(params, optimizer)
  value_graphdef, value_params = init_value_params(model_config, params)
  method = make_ppo(graphdef, optimizer, reward_fn, options, value_graphdef=value_graphdef,
                    value_optimizer=optimizer)
  return method, init_state(params, optimizer, value_params, optimizer)
