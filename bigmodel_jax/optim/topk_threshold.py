"""The exact k-th largest value of each block of a non-negative array, without sorting it.

`kth_largest(x, k, axes)` returns, for every block (the entries that share the index of the
axes *not* in `axes`), the k-th largest entry of that block, at the reduced block shape
(keepdims). `x >= kth_largest(x, k, axes)` then selects the top k of every block (and every
entry tied with the k-th).

Radix select on the float bits. For non-negative floats, the uint32 bit pattern is ordered like
the value, so the k-th largest value is found digit by digit on the bits:

  1. histogram of the high 16 bits of each block (one scatter-add pass over `x`); a suffix sum
     over the 32768 bins gives the bin `d1` holding the k-th largest and the rank `r` of the
     k-th largest inside that bin;
  2. histogram of the low 16 bits of the entries whose high bits equal `d1` (a second pass;
     the other entries are dropped); the bin holding the r-th largest gives the low bits.

The threshold `(d1 << 16) | d2` is the exact k-th largest bit pattern: two counting passes over
the data and work on 2^16 bins per block, instead of an O(n log n) sort. Both passes are plain
jnp on the global logical array, so a block sharded over devices is ranked as a whole (XLA sums
the per-shard histograms); the result never depends on the sharding.

Blocks may lie along any axes (no transpose is made: each entry's block index is computed from
iotas). When a leaf has many small blocks (more than `MAX_RADIX_BLOCKS`, or blocks of at most
`SORT_BLOCK_SIZE` entries), the 2^16 bins per block would cost more than the data, so the
blocks are moved to the last axis and sorted instead (exact as well).

NaN sorts above +inf (its bit pattern is larger); inputs are expected to be |m|, never negative.

`kth_largest_magnitude(x, k, axes)` is the same for |x|; on CPU, for blocks that are the
trailing axes of a float32 array, it runs the native radix select of `native_select` (XLA:CPU's
scatter-add is too slow for the histograms), elsewhere `kth_largest` on |x|.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.blocks.spec import block_shape
from bigmodel_jax.optim import native_select

HIGH_BINS = 1 << 15  # bits 30..16 of a non-negative float32 (the sign bit is 0)
LOW_BINS = 1 << 16  # bits 15..0
MAX_RADIX_BLOCKS = 256
SORT_BLOCK_SIZE = 1 << 12


def block_count(shape, axes) -> tuple[int, int]:
  """(number of blocks, entries per block) of a leaf of `shape` cut along `axes`."""
  size = math.prod(shape[a] for a in axes)
  return math.prod(shape) // max(size, 1), size


def block_k(block_size: int, fraction) -> jax.Array | int:
  """k = max(1, floor(block_size * fraction)), capped at block_size.

  A Python `fraction` gives a Python int (computed in float64, exactly the documented rule); a
  traced one (e.g. under `optax.inject_hyperparams`) gives an int32 computed in float32.
  """
  if isinstance(fraction, int | float | np.floating):
    return min(block_size, max(1, int(block_size * float(fraction))))
  k = jnp.floor(block_size * jnp.asarray(fraction, jnp.float32)).astype(jnp.int32)
  return jnp.clip(k, 1, block_size)


def _block_ids(shape, axes) -> jax.Array | int:
  """Row-major index of each entry's block (over the axes not in `axes`), at `shape`."""
  outer = [a for a in range(len(shape)) if a not in axes]
  if not outer:
    return 0
  ids, stride = 0, 1
  for a in reversed(outer):
    ids = ids + jax.lax.broadcasted_iota(jnp.int32, shape, a) * stride
    stride *= shape[a]
  return ids


def _histogram(index, num_bins: int) -> jax.Array:
  """Counts of `index` values in [0, num_bins); out-of-range indices are dropped."""
  return jnp.zeros((num_bins,), jnp.int32).at[index.reshape(-1)].add(1, mode="drop")


def _select_bin(hist: jax.Array, rank) -> tuple[jax.Array, jax.Array]:
  """For each row of `hist` (blocks x bins): the bin holding the rank-th largest entry and the
  number of entries in strictly higher bins."""
  at_or_above = jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # entries in bins >= b
  rank = jnp.reshape(rank, (-1, 1))
  bin_index = jnp.sum(at_or_above >= rank, axis=1) - 1
  above = jnp.take_along_axis(jnp.pad(at_or_above, ((0, 0), (0, 1))),
                              (bin_index + 1)[:, None], axis=1)[:, 0]
  return bin_index.astype(jnp.int32), above


def _radix_kth_largest(x: jax.Array, k, axes) -> jax.Array:
  num_blocks, _ = block_count(x.shape, axes)
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  ids = _block_ids(x.shape, axes)
  high = bits >> 16
  hist_high = _histogram(ids * HIGH_BINS + high, num_blocks * HIGH_BINS)
  high_bin, above = _select_bin(hist_high.reshape(num_blocks, HIGH_BINS), k)
  in_bin = high == jnp.take(high_bin, ids) if num_blocks > 1 else high == high_bin[0]
  low_index = jnp.where(in_bin, ids * LOW_BINS + (bits & 0xFFFF), num_blocks * LOW_BINS)
  hist_low = _histogram(low_index, num_blocks * LOW_BINS)
  low_bin, _ = _select_bin(hist_low.reshape(num_blocks, LOW_BINS), k - above)
  threshold = jax.lax.bitcast_convert_type((high_bin << 16) | low_bin, jnp.float32)
  return threshold


def _sort_kth_largest(x: jax.Array, k, axes) -> jax.Array:
  num_blocks, size = block_count(x.shape, axes)
  last = tuple(range(x.ndim - len(axes), x.ndim))
  rows = jnp.moveaxis(x, axes, last).reshape(num_blocks, size)
  ascending = jnp.sort(rows, axis=1)
  index = jnp.full((num_blocks, 1), size - k, jnp.int32)
  return jnp.take_along_axis(ascending, index, axis=1)[:, 0]


def kth_largest(x: jax.Array, k, axes) -> jax.Array:
  """The exact k-th largest entry of every block of a non-negative array.

  Args:
    x: non-negative floats (float32 or narrower; compared exactly after upcasting).
    k: 1 <= k <= block size; a Python int or an int32 scalar (may be traced).
    axes: sorted non-negative axes that one block spans (non-empty).

  Returns:
    The k-th largest value of every block, in `x.dtype`, at the block shape (`x.shape` with
    the block axes set to 1).
  """
  axes = tuple(axes)
  num_blocks, size = _checked_blocks(x.shape, k, axes)
  if num_blocks > MAX_RADIX_BLOCKS or size <= SORT_BLOCK_SIZE:
    threshold = _sort_kth_largest(x.astype(jnp.float32), k, axes)
  else:
    threshold = _radix_kth_largest(x, k, axes)
  return threshold.reshape(block_shape(x.shape, axes)).astype(x.dtype)


def _checked_blocks(shape, k, axes: tuple) -> tuple[int, int]:
  """`block_count(shape, axes)`, after checking that `axes` is non-empty and a Python k fits."""
  if not axes:
    raise ValueError("kth_largest needs at least one block axis (a block of one entry is "
                     "its own k-th largest)")
  num_blocks, size = block_count(shape, axes)
  if isinstance(k, int) and not 1 <= k <= size:
    raise ValueError(f"k={k} outside [1, {size}] (block size) for shape {shape}, axes {axes}")
  return num_blocks, size


def _native_applies(x: jax.Array, axes) -> bool:
  trailing = tuple(range(x.ndim - len(axes), x.ndim))
  return (x.dtype == jnp.float32 and tuple(axes) == trailing
          and block_count(x.shape, axes)[1] > SORT_BLOCK_SIZE and native_select.available())


def kth_largest_magnitude(x: jax.Array, k, axes) -> jax.Array:
  """The exact k-th largest |x| of every block (`kth_largest` of |x|).

  Args:
    x: floats of any sign (float32 or narrower).
    k: 1 <= k <= block size; a Python int or an int32 scalar (may be traced).
    axes: sorted non-negative axes that one block spans (non-empty).

  Returns:
    The k-th largest |x| of every block, in `x.dtype`, at the block shape.
  """
  axes = tuple(axes)
  if not axes or not _native_applies(x, axes):
    return kth_largest(jnp.abs(x), k, axes)
  rows = x.reshape(_checked_blocks(x.shape, k, axes))
  threshold = jax.lax.platform_dependent(
      rows, k, cpu=native_select.kth_largest_magnitude_rows,
      default=lambda rows, k: kth_largest(jnp.abs(rows), k, (1,))[:, 0])
  return threshold.reshape(block_shape(x.shape, axes))
