"""Which parameters take weight decay.

Following the torch AdamW conventions of the papers this project implements, matrices and
embeddings are decayed, norm scales and biases are not. The decision is made on the leaf's name
(its last path component), not on its rank: with layers stacked on a leading axis a norm scale is
2-D, so "ndim >= 2" would wrongly decay it.
"""

import jax

DECAYED_LEAF_NAMES = frozenset({"kernel", "embedding"})


def decay_mask(params):
  """Returns a pytree of bools: True for leaves that take weight decay.

  Args:
    params: parameter pytree (nested dicts keyed by module and leaf names).

  Returns:
    A pytree with the structure of `params` holding Python bools.
  """

  def is_decayed(path, _):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    return name in DECAYED_LEAF_NAMES

  return jax.tree_util.tree_map_with_path(is_decayed, params)
