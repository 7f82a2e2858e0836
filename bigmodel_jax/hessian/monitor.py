"""Watching block spectra during training: an Optax-style monitor and a loggable metrics dict.

`hessian_monitor` is a `GradientTransformationExtraArgs` that passes the updates through
unchanged and, every `every` steps, recomputes the top Hessian eigenvalue of each block with a
short Lanczos run on the loss function it receives as optax's extra argument `value_fn`
(the name optax's line searches use; the project's train step passes it):

    opt = optax.chain(hessian_monitor(every=100), optax.adamw(1e-3))
    updates, state = opt.update(grads, state, params, value_fn=lambda p: loss(p, batch))

`block_top_eigenvalues` computes the same figures outside an optimizer, as a dict ready for a
metrics writer ({"hessian/top_eig/<block>": value}).

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024).
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.hessian import spectrum
from bigmodel_jax.hessian.hvp import Block, block_hvp, block_mask, list_blocks, select_blocks
from bigmodel_jax.hessian.lanczos import check_counts, lanczos, ritz

PREFIX = "hessian/top_eig/"


def _top_eig(loss_fn, params, block: Block, key, num_steps: int, dtype, mode):
  leaf = jax.tree.leaves(params)[block.leaf_index]
  mask = block_mask(block, dtype=leaf.dtype)
  probe = spectrum.gaussian_probes(key, leaf, 1, mask)[0]
  matvec = lambda v: block_hvp(loss_fn, params, block, v, mode=mode)
  result = lanczos(matvec, probe, min(num_steps, block.size), "none", dtype)
  return jnp.max(ritz(result)[0])


def top_eigenvalues(loss_fn: Callable, params, blocks: Sequence[Block], key: jax.Array,
                    num_steps: int = 20, dtype=None, mode: str = "auto") -> jax.Array:
  """The largest eigenvalue of each H_bb (one probe, `num_steps` Lanczos steps); jit-able.

  Args:
    loss_fn: loss_fn(params) -> scalar.
    params: the parameters.
    blocks: the blocks (from `hvp.list_blocks` / `hvp.select_blocks`).
    key: PRNG key; block i uses fold_in(key, i).
    num_steps: Lanczos steps (capped at the block size).
    dtype: Lanczos dtype (default float64 with x64).
    mode: HVP mode.

  Returns:
    [len(blocks)] top eigenvalues.
  """
  check_counts(num_steps=num_steps)
  return jnp.stack([_top_eig(loss_fn, params, b, jax.random.fold_in(key, i), num_steps, dtype,
                             mode) for i, b in enumerate(blocks)])


def block_top_eigenvalues(loss_fn: Callable, params, key: jax.Array, partition=None,
                          layer_axes=None,
                          patterns: Sequence[str] | None = None, layers=None,
                          num_steps: int = 20) -> dict[str, float]:
  """Per-block top Hessian eigenvalues as a loggable dict (for a trainer's metrics writer).

  Args:
    loss_fn: loss_fn(params) -> scalar, e.g. the mean loss of the current (or a fixed) batch.
    params: the parameters.
    key: PRNG key (e.g. fold_in(seed_key, step) for reproducible logs).
    partition: a `bigmodel_jax.blocks` partition (default one block per per-layer tensor).
    layer_axes: stacked layers (see `bigmodel_jax.blocks.leaves`); None: nnx metadata only.
    patterns: keep blocks whose path ends with one of these (default: all blocks).
    layers: keep only these layers of stacked leaves.
    num_steps: Lanczos steps per block.

  Returns:
    {"hessian/top_eig/<block name>": float}.
  """
  blocks = list_blocks(params, partition, layer_axes=layer_axes)
  if patterns is not None:
    blocks = select_blocks(blocks, patterns, layers)
  values = jax.jit(lambda p, k: top_eigenvalues(loss_fn, p, blocks, k, num_steps))(params, key)
  return {PREFIX + b.name: float(v) for b, v in zip(blocks, values)}


class HessianMonitorState(NamedTuple):
  """State of `hessian_monitor`.

  Attributes:
    count: number of updates seen.
    key: the probes' PRNG key as raw uint32 data (`jax.random.key_data`), so that the state
      checkpoints and sizes like any array.
    top_eigenvalues: [num_blocks] the latest top eigenvalue per block (NaN before the first).
    last_step: the update count at which they were computed (-1 before).
  """

  count: jax.Array
  key: jax.Array
  top_eigenvalues: jax.Array
  last_step: jax.Array


def hessian_monitor(every: int = 100, partition=None, patterns: Sequence[str] | None = None,
                    layer_axes=None,
                    layers=None, num_steps: int = 20, seed: int = 0,
                    mode: str = "auto") -> optax.GradientTransformationExtraArgs:
  """An identity transform that records per-block top Hessian eigenvalues every `every` steps.

  Args:
    every: recompute on updates 0, every, 2 * every, ...
    partition: a `bigmodel_jax.blocks` partition (default one block per per-layer tensor).
    layer_axes: stacked layers (see `bigmodel_jax.blocks.leaves`); None: nnx metadata only.
    patterns: keep blocks whose path ends with one of these (default all).
    layers: keep only these layers of stacked leaves.
    num_steps: Lanczos steps per block.
    seed: seed of the probe key.
    mode: HVP mode.

  Returns:
    A GradientTransformationExtraArgs; `update(updates, state, params, value_fn=...)` needs
    `params` and the extra argument `value_fn(params) -> scalar`. Read the values with
    `monitor_metrics(state, params, ...)`.
  """
  if every < 1:
    raise ValueError(f"hessian_monitor: every ({every}) must be >= 1")
  check_counts(num_steps=num_steps)

  def blocks_of(params, warn):
    found = list_blocks(params, partition, layer_axes=layer_axes, warn=warn)
    return found if patterns is None else select_blocks(found, patterns, layers)

  def init_fn(params):
    # optax.tree_map_params (placing the state on a mesh) initialises with a placeholder that
    # has no array leaves: only the state's structure matters there, so no block is listed.
    leaves = jax.tree.leaves(params)
    shaped = bool(leaves) and all(hasattr(x, "shape") for x in leaves)
    n = len(blocks_of(params, warn=True)) if shaped else 0
    return HessianMonitorState(jnp.zeros((), jnp.int32),
                               jax.random.key_data(jax.random.key(seed)),
                               jnp.full((n,), jnp.nan, jnp.float32), jnp.full((), -1, jnp.int32))

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    del extra_args
    if params is None or value_fn is None:
      raise ValueError("hessian_monitor.update needs params and the extra argument value_fn")
    blocks = blocks_of(params, warn=False)

    def compute(_):
      key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
      values = top_eigenvalues(value_fn, params, blocks, key, num_steps, mode=mode)
      return values.astype(jnp.float32), state.count

    values, last = jax.lax.cond(state.count % every == 0, compute,
                                lambda _: (state.top_eigenvalues, state.last_step), None)
    return updates, HessianMonitorState(state.count + 1, state.key, values, last)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def monitor_metrics(state: HessianMonitorState, params, partition=None, layer_axes=None,
                    patterns: Sequence[str] | None = None, layers=None) -> dict[str, float]:
  """The monitor's latest values as {"hessian/top_eig/<block>": float} (same block selection)."""
  blocks = list_blocks(params, partition, layer_axes=layer_axes, warn=False)
  if patterns is not None:
    blocks = select_blocks(blocks, patterns, layers)
  return {PREFIX + b.name: float(v) for b, v in zip(blocks, state.top_eigenvalues)}
