"""L2-SP: a pull of the parameters towards their starting point, as a gradient transformation.

Li et al., "Explicit inductive bias for transfer learning with convolutional networks" (ICML
2018): the fine-tuning baseline that keeps the weights close to the pre-trained ones, which MoFO
is compared against.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class L2TowardsInitState(NamedTuple):
  """State of `add_l2_towards_init`: the parameters given to `init`."""

  init_params: optax.Params


def add_l2_towards_init(strength: float) -> optax.GradientTransformation:
  """Adds strength * (p - p0) to the updates, p0 the parameters given to `init` (L2-SP).

  The gradient of the penalty strength / 2 * ||p - p0||^2 towards the starting point (Li et al.,
  "Explicit inductive bias for transfer learning with convolutional networks", ICML 2018): the
  fine-tuning baseline that keeps the weights close to the pre-trained ones.

  Args:
    strength: the penalty's coefficient.

  Returns:
    An optax GradientTransformation; its update needs `params`.
  """
  def init_fn(params):
    return L2TowardsInitState(init_params=jax.tree.map(jnp.copy, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("add_l2_towards_init needs the parameters in update()")
    updates = jax.tree.map(lambda g, p, p0: g + strength * (p - p0).astype(g.dtype),
                           updates, params, state.init_params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)
