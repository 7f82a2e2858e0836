"""Freezing a set of decoder blocks inside the stacked arrays, bitwise, under any optimizer.

Masking the gradients is not enough: AdamW's decoupled weight decay (and a momentum built up
before) still moves a slice whose gradient is zero. `freeze_updates` therefore masks the
*updates*, after the whole chain: a frozen entry gets the update -0.0, and p + (-0.0) == p
bitwise for every float p (+0.0 would turn -0.0 into +0.0). Used for the FT-closed attack and
for customising the public blocks only (Huang et al., arXiv 2410.11182, §5; spec A.7.9).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.semi_open.replacement import LAYERS_KEY


def trainable_mask(params: dict, trainable_layers: jax.Array, train_others: bool) -> dict:
  """Which entries may change: bool[L, 1, ...] for stacked leaves, bool scalars otherwise.

  Args:
    params: the parameters (pure dict, stacked blocks under `layers`).
    trainable_layers: bool[L], the blocks that train.
    train_others: whether the leaves outside `layers` (embeddings, positions, final norm, head)
      train.

  Returns:
    A pytree of the structure of `params`.
  """
  mask = {k: jax.tree.map(lambda _: jnp.asarray(train_others), v)
          for k, v in params.items() if k != LAYERS_KEY}
  mask[LAYERS_KEY] = jax.tree.map(
      lambda p: trainable_layers.reshape((-1,) + (1,) * (p.ndim - 1)), params[LAYERS_KEY])
  return mask


class FreezeState(NamedTuple):
  """The trainable mask, carried in the optimizer state.

  In the state rather than in the transformation, so one compiled train step serves every
  closed set (the runs differ only in their initial state).
  """

  mask: dict


def freeze_updates(mask: dict) -> optax.GradientTransformation:
  """Sets the updates of the frozen entries to -0.0 (chain it after the optimizer).

  Args:
    mask: `trainable_mask(...)`, the mask `init` puts in the state; False entries are frozen.
      `with_mask` swaps it for another of the same structure without rebuilding the optimizer.

  Returns:
    The transformation; with `optax.apply_updates` the frozen entries stay bitwise unchanged.
  """

  def init(params):
    del params
    return FreezeState(mask)

  def update(updates, state, params=None):
    del params
    frozen = jax.tree.map(lambda u, m: jnp.where(m, u, jnp.asarray(-0.0, u.dtype)), updates,
                          state.mask)
    return frozen, state

  return optax.GradientTransformation(init, update)


def with_mask(opt_state: tuple, mask: dict) -> tuple:
  """The state of `optax.chain(optimizer, freeze_updates(...))` with the mask replaced.

  Args:
    opt_state: the chain's state (its last element the FreezeState).
    mask: the new `trainable_mask(...)`.

  Returns:
    The chain's state freezing according to `mask`.
  """
  if not isinstance(opt_state[-1], FreezeState):
    raise ValueError("with_mask needs the state of optax.chain(optimizer, freeze_updates(...))")
  return (*opt_state[:-1], FreezeState(mask))
