"""The block partition core: rules, pytrees of axes, reduced shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax import blocks

PARAMS = {
    "embed": {"embedding": jnp.ones((10, 4))},
    "layers": {"attn": {"query": {"kernel": jnp.ones((3, 4, 2, 2))}},
               "attn_norm": {"scale": jnp.ones((3, 4))}},
    "final_norm": {"bias": jnp.ones((4,))},
}


def test_per_tensor_keeps_the_stacked_layer_axis():
  axes = blocks.resolve(None, PARAMS)
  assert axes["embed"]["embedding"] == (0, 1)
  assert axes["layers"]["attn"]["query"]["kernel"] == (1, 2, 3)
  assert axes["layers"]["attn_norm"]["scale"] == (1,)
  assert blocks.num_blocks((3, 4, 2, 2), (1, 2, 3)) == 3


def test_callable_rule_gets_string_paths_and_negative_axes_are_normalised():
  seen = []

  def rule(path, leaf):
    seen.append(path)
    return (-1,) if leaf.ndim > 1 else ()

  axes = blocks.resolve(rule, PARAMS)
  assert ("layers", "attn", "query", "kernel") in seen
  assert axes["layers"]["attn"]["query"]["kernel"] == (3,)
  assert axes["final_norm"]["bias"] == ()


def test_pytree_partition_and_errors():
  tree = {"embed": {"embedding": (1,)},
          "layers": {"attn": {"query": {"kernel": (1, 3)}}, "attn_norm": {"scale": ()}},
          "final_norm": {"bias": ()}}
  axes = blocks.resolve(tree, PARAMS)
  assert axes["layers"]["attn"]["query"]["kernel"] == (1, 3)
  with pytest.raises(ValueError, match="final_norm/bias"):
    blocks.resolve(lambda path, leaf: (1,), PARAMS)


def test_block_mean_is_stored_at_the_reduced_shape():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  mean = blocks.block_mean(x, (1,))
  assert mean.shape == blocks.block_shape(x.shape, (1,)) == (2, 1, 4)
  np.testing.assert_allclose(mean, np.mean(np.asarray(x), axis=1, keepdims=True))
  assert blocks.block_mean(x.astype(jnp.bfloat16), (0, 1, 2)).dtype == jnp.float32
  assert jax.tree.leaves(blocks.resolve(None, PARAMS), is_leaf=blocks.is_axes)
