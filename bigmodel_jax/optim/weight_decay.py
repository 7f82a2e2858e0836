"""Which parameters take weight decay: matrices and embeddings, by rank (optax's convention).

Following optax (`mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)`) and the torch AdamW
conventions of the papers this project implements, a leaf is decayed when one layer's tensor has
rank >= 2 (kernels, embeddings, conv filters), whatever the framework names it; norm scales and
biases (rank <= 1) are not. A stacked norm scale (layers, D) is rank 1 per layer: the layer axis
comes from nnx metadata or `layer_axes` (see `bigmodel_jax.blocks.leaves`). A bias of a head-wise
projection (flax DenseGeneral: (H, Dh)) is 2-D, so biases are also excluded by their name in
every family (`bias`, Haiku's `b` and `offset`).
"""

import jax

from bigmodel_jax import blocks

BIAS_NAMES = frozenset({"bias", "b", "offset"})


def decay_mask(params, layer_axes: blocks.LayerAxes = None):
  """Returns a pytree of bools: True for leaves that take weight decay.

  Args:
    params: any parameter pytree (dicts, nnx.State, Equinox modules, ...).
    layer_axes: stacked layers (see `bigmodel_jax.blocks.leaves`); None: nnx metadata only.

  Returns:
    A pytree with the structure of `params` holding Python bools.
  """
  decayed = [leaf.rank >= 2 and leaf.path[-1] not in BIAS_NAMES
             for leaf in blocks.leaves(params, layer_axes)]
  return jax.tree.unflatten(jax.tree.structure(params), decayed)


def decay_mask_for(mask, layer_axes: blocks.LayerAxes = None):
  """The mask argument for `optax.add_decayed_weights`: `mask`, or `decay_mask` if None.

  The default mask found for a tree that carries nnx metadata (what `nnx.Optimizer` gives init)
  is reused for the same paths and shapes in plain arrays (what it gives update).
  """
  if mask is not None:
    return mask
  remembered = blocks.remember_per_tree(
      lambda tree, _: jax.tree.leaves(decay_mask(tree, layer_axes)))
  return lambda params: jax.tree.unflatten(
      jax.tree.structure(params), remembered(params, blocks.has_variables(params)))
