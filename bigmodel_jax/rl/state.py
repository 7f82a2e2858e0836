"""The state of an RL fine-tuning run, and its exact size."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.sharding import tree_bytes


class RLState(NamedTuple):
  """Everything an RL step reads and updates (a pytree; None fields are absent).

  Attributes:
    step: int32 scalar, the number of updates so far.
    params: the policy parameters (pure dict).
    opt_state: the policy optimizer's state.
    ref_params: the frozen reference policy (the KL anchor).
    value_params: the value model's parameters (PPO only).
    value_opt_state: the value optimizer's state (PPO only).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ref_params: Any
  value_params: Any = None
  value_opt_state: Any = None


def init_state(params, optimizer: optax.GradientTransformation, value_params=None,
               value_optimizer: optax.GradientTransformation | None = None) -> RLState:
  """The initial state: the reference is a copy of the starting policy.

  Args:
    params: the starting (e.g. supervised fine-tuned) policy parameters.
    optimizer: the policy optimizer.
    value_params: the value model's starting parameters, for PPO.
    value_optimizer: its optimizer (required with value_params).

  Returns:
    The RLState at step 0.
  """
  ref_params = jax.tree.map(jnp.copy, params)
  value_opt_state = None
  if value_params is not None:
    if value_optimizer is None:
      raise ValueError("value_params need a value_optimizer")
    value_opt_state = value_optimizer.init(value_params)
  return RLState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ref_params,
                 value_params, value_opt_state)


def state_bytes(state: RLState) -> dict[str, int]:
  """Exact bytes of each part of a (concrete or abstract) state, and their total."""
  parts = {name: tree_bytes(getattr(state, name)) for name in RLState._fields}
  parts["total"] = sum(parts.values())
  return parts
