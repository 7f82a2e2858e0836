"""How one leaf is cut into blocks: `Blocks` (one role) and `Parts` (several roles on one leaf).

A block is a group of entries that share one statistic (one second moment in Adam-mini, one top-k
selection in MoFO, one spectrum in the Hessian diagnostics). `Blocks(axes, view)` cuts a leaf,
optionally viewed at a finer shape (a free row-major reshape that splits one axis, e.g. a fused
(D, H*Dh) kernel viewed at (D, H, Dh)), by reducing over `axes` of that view: its statistic has
the view's shape with those axes set to 1. `Parts(axis, sizes, parts)` is a leaf that holds several
roles side by side along one axis (GPT-2's fused `c_attn` = q | k | v, Gemma's `kv_einsum`); each
part is cut by its own `Blocks` and its statistics are stored flat, one after the other.

`reduce_blocks` / `expand_blocks` are the two operations every consumer needs: the per-block mean
of a leaf-shaped array, and a per-block statistic broadcast back to the leaf's shape.

References: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025).
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Axes = tuple[int, ...]
Shape = tuple[int, ...]


def block_shape(shape: Sequence[int], axes: Axes) -> Shape:
  """Shape of a per-block statistic: `shape` with the block axes set to 1."""
  return tuple(1 if a in axes else d for a, d in enumerate(shape))


def num_blocks(shape: Sequence[int], axes: Axes) -> int:
  """Number of blocks of a leaf of `shape` partitioned over `axes`."""
  return int(np.prod(block_shape(shape, axes), dtype=np.int64))


def view_axis(shape: Shape, view: Shape, axis: int) -> int:
  """The view axis at which leaf axis `axis` starts (the view only splits axes)."""
  done, k = 1, 0
  for i in range(axis):
    target = int(np.prod(shape[: i + 1], dtype=np.int64))
    while done < target:
      done *= view[k]
      k += 1
  return k


@dataclasses.dataclass(frozen=True)
class Blocks:
  """A leaf (viewed at `view`) cut into blocks by reducing over `axes`.

  Attributes:
    axes: sorted non-negative axes of the view (of the leaf when `view` is None) that one block
      spans; `()` is one block per element.
    view: None, or the shape the leaf is reshaped to before reducing (row-major; it splits axes).
  """

  axes: Axes
  view: Shape | None = None

  def shape(self, leaf_shape: Sequence[int]) -> Shape:
    """The shape that is reduced: `view`, or the leaf's own shape."""
    return tuple(leaf_shape) if self.view is None else tuple(self.view)

  def stat_shape(self, leaf_shape: Sequence[int]) -> Shape:
    """Shape of the per-block statistic (keepdims over the view)."""
    return block_shape(self.shape(leaf_shape), self.axes)

  def count(self, leaf_shape: Sequence[int]) -> int:
    """Number of blocks."""
    return num_blocks(self.shape(leaf_shape), self.axes)

  def block_size(self, leaf_shape: Sequence[int]) -> int:
    """Entries per block."""
    shape = self.shape(leaf_shape)
    return int(np.prod([shape[a] for a in self.axes], dtype=np.int64))

  def with_layer_axis(self, layer_shape: Sequence[int], axis: int, size: int) -> "Blocks":
    """This cut of one layer's tensor, for the leaf that stacks `size` layers at `axis`."""
    layer_shape = tuple(layer_shape)
    if self.view is None:
      return Blocks(tuple(a + (a >= axis) for a in self.axes))
    k = view_axis(layer_shape, self.view, axis)
    view = (*self.view[:k], size, *self.view[k:])
    return Blocks(tuple(a + (a >= k) for a in self.axes), view)


@dataclasses.dataclass(frozen=True)
class Parts:
  """A leaf holding several roles along one axis, each cut by its own `Blocks`.

  Attributes:
    axis: the non-negative leaf axis along which the roles sit side by side.
    sizes: the length of each part along `axis` (they add up to the leaf's length).
    parts: one `Blocks` per part, in the coordinates of that part (the leaf sliced along `axis`).
    names: the role of each part (shown by `describe`).
  """

  axis: int
  sizes: tuple[int, ...]
  parts: tuple[Blocks, ...]
  names: tuple[str, ...] = ()

  def part_shapes(self, leaf_shape: Sequence[int]) -> list[Shape]:
    """The shape of every part."""
    return [tuple(n if a == self.axis else d for a, d in enumerate(leaf_shape))
            for n in self.sizes]

  def offsets(self) -> list[int]:
    """Where each part starts along `axis`."""
    return [int(o) for o in np.cumsum((0, *self.sizes[:-1]))]

  def stat_shape(self, leaf_shape: Sequence[int]) -> Shape:
    """The statistics of all parts, flat: (number of blocks,)."""
    return (self.count(leaf_shape),)

  def count(self, leaf_shape: Sequence[int]) -> int:
    """Number of blocks over all parts."""
    return sum(p.count(s) for p, s in zip(self.parts, self.part_shapes(leaf_shape)))

  def with_layer_axis(self, layer_shape: Sequence[int], axis: int, size: int) -> "Parts":
    """This cut of one layer's tensor, for the leaf that stacks `size` layers at `axis`."""
    layer_parts = self.part_shapes(layer_shape)
    return Parts(self.axis + (self.axis >= axis), self.sizes,
                 tuple(p.with_layer_axis(s, axis, size) for p, s in zip(self.parts, layer_parts)),
                 self.names)


Spec = Blocks | Parts


def is_spec(x) -> bool:
  """True for a `Blocks` or `Parts` (a leaf of a resolved partition)."""
  return isinstance(x, Blocks | Parts)


def pieces(x: jax.Array, spec: Spec) -> list[tuple[jax.Array, Blocks]]:
  """The leaf split into its parts, each with its `Blocks` (one piece for a `Blocks`)."""
  if isinstance(spec, Blocks):
    return [(x, spec)]
  cuts = np.cumsum(spec.sizes[:-1]).tolist()
  return list(zip(jnp.split(x, cuts, axis=spec.axis), spec.parts))


def _mean(x: jax.Array, blocks: Blocks) -> jax.Array:
  x = x.reshape(blocks.shape(x.shape))
  return jnp.mean(x, axis=blocks.axes, keepdims=True) if blocks.axes else x


def reduce_blocks(x: jax.Array, spec: Spec) -> jax.Array:
  """The mean of `x` over every block, at `spec.stat_shape(x.shape)`.

  Args:
    x: a leaf-shaped array (reduced in its own dtype; cast it first for float32 means).
    spec: the leaf's `Blocks` or `Parts`.

  Returns:
    The per-block means: keepdims over the view for `Blocks`, flat (num_blocks,) for `Parts`.
  """
  if isinstance(spec, Blocks):
    return _mean(x, spec)
  return jnp.concatenate([_mean(piece, b).reshape(-1) for piece, b in pieces(x, spec)])


def expand_blocks(stat: jax.Array, spec: Spec, shape: Sequence[int]) -> jax.Array:
  """A per-block statistic broadcast to the leaf's `shape` (inverse of `reduce_blocks`'s shape)."""
  if isinstance(spec, Blocks):
    return jnp.broadcast_to(stat, spec.shape(shape)).reshape(shape)
  out, start = [], 0
  for blocks, part_shape in zip(spec.parts, spec.part_shapes(shape)):
    n = blocks.count(part_shape)
    piece = stat[start:start + n].reshape(blocks.stat_shape(part_shape))
    out.append(jnp.broadcast_to(piece, blocks.shape(part_shape)).reshape(part_shape))
    start += n
  return jnp.concatenate(out, axis=spec.axis)


def check_spec(spec: Spec, shape: Sequence[int], where: str) -> Spec:
  """Validates (and normalises negative axes of) a spec for a leaf of `shape`.

  Raises:
    ValueError: naming `where` when the view does not fit the leaf or an axis is out of range.
  """
  shape = tuple(shape)
  if isinstance(spec, Parts):
    if sum(spec.sizes) != shape[spec.axis] or len(spec.sizes) != len(spec.parts):
      raise ValueError(f"partition for {where}: parts {spec.sizes} along axis {spec.axis} do not "
                       f"fit the leaf's shape {shape}")
    parts = tuple(check_spec(p, s, where) for p, s in zip(spec.parts, spec.part_shapes(shape)))
    return dataclasses.replace(spec, parts=parts)
  view = spec.shape(shape)
  if int(np.prod(view, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)):
    raise ValueError(f"partition for {where}: view {view} does not fit the leaf's shape {shape}")
  if any(not -len(view) <= a < len(view) for a in spec.axes):
    raise ValueError(f"partition axes {spec.axes} out of range for {where} with shape {view}")
  return Blocks(tuple(sorted({a % len(view) for a in spec.axes})) if view else (), spec.view)
