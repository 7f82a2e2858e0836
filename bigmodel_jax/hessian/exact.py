"""Exact Hessians and spectra of small models (jax.hessian + eigh), the ground truth for tests.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
exact block spectra as in their small-model figures.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bigmodel_jax.hessian.hvp import Block, block_mask


def hessian_matrix(loss_fn: Callable, params) -> jax.Array:
  """The full Hessian of `loss_fn` at `params`, in the order of `ravel_pytree(params)`.

  Args:
    loss_fn: loss_fn(params) -> scalar.
    params: a small parameter pytree (n entries: n^2 memory).

  Returns:
    [n, n] Hessian.
  """
  flat, unravel = ravel_pytree(params)
  return jax.jit(jax.hessian(lambda x: loss_fn(unravel(x))))(flat)


def block_indices(params, block: Block) -> np.ndarray:
  """Positions of the block's entries in `ravel_pytree(params)` (row-major within the leaf)."""
  sizes = [int(np.size(x)) for x in jax.tree.leaves(params)]
  offset = int(np.sum(sizes[:block.leaf_index]))
  mask = np.asarray(block_mask(block)).ravel()
  return offset + np.flatnonzero(mask)


def block_hessian(hessian: jax.Array, params, block: Block) -> jax.Array:
  """H_bb: the rows and columns of one block of the full Hessian."""
  idx = block_indices(params, block)
  return hessian[np.ix_(idx, idx)]


def eigenvalues(matrix: jax.Array) -> np.ndarray:
  """Ascending eigenvalues of a symmetric matrix (symmetrised first), as float64 numpy."""
  matrix = jnp.asarray(matrix)
  return np.asarray(jnp.linalg.eigvalsh(0.5 * (matrix + matrix.T)), np.float64)
