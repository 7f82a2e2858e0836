"""Partitions that need no rule: per tensor, per element, and the documented default by layout.

A `LeafRule` decides a leaf's blocks from its `Leaf` record alone (path, shape, layer axis).
`by_layout` is what a leaf that no rule recognises gets (and the engine warns about it): a matrix
whose output axis its framework's naming tells — flax / Haiku `kernel` and `w` are (in, .., out),
torch-style `weight` of rank >= 2 (Equinox, PyTorch) is (out, in, ..) — one block per output
neuron, the paper's principle for linear layers; any other leaf one block per (per-layer) tensor,
the paper's choice for tensors it does not single out.
"""

import dataclasses
from collections.abc import Callable

from bigmodel_jax.blocks.leaves import Leaf
from bigmodel_jax.blocks.spec import Blocks, Spec


def in_leaf_coordinates(spec: Spec, leaf: Leaf) -> Spec:
  """A cut of one layer's tensor, moved to the whole leaf (the layer axis inserted)."""
  if leaf.layer_axis is None:
    return spec
  return spec.with_layer_axis(leaf.layer_shape, leaf.layer_axis, leaf.shape[leaf.layer_axis])


@dataclasses.dataclass(frozen=True)
class LeafRule:
  """A partition that cuts one layer's tensor by a function of its `Leaf`.

  Attributes:
    name: shown by `describe`.
    layer_axes_fn: Leaf -> the negative axes of one layer's tensor that one block spans.
    name_fn: optional Leaf -> what `describe` shows for that leaf (default: `name`).
  """

  name: str
  layer_axes_fn: Callable[[Leaf], tuple[int, ...]]
  name_fn: Callable[[Leaf], str] | None = None

  def blocks_for(self, leaf: Leaf) -> tuple[Spec, str, bool]:
    """(the leaf's cut, what the rule calls it, True)."""
    rank = leaf.rank
    axes = tuple(sorted(a % rank for a in self.layer_axes_fn(leaf))) if rank else ()
    name = self.name if self.name_fn is None else self.name_fn(leaf)
    return in_leaf_coordinates(Blocks(axes), leaf), name, True


def _all_axes(leaf: Leaf) -> tuple[int, ...]:
  return tuple(range(-leaf.rank, 0))


per_tensor = LeafRule("per tensor", _all_axes)
per_element = LeafRule("per element", lambda leaf: ())

_OUT_LAST = ("kernel", "w")
_OUT_FIRST = ("weight",)


def _layout_axes(leaf: Leaf) -> tuple[int, ...]:
  if leaf.rank >= 2 and leaf.path[-1] in _OUT_LAST:
    return tuple(range(-leaf.rank, -1))
  if leaf.rank >= 2 and leaf.path[-1] in _OUT_FIRST:
    return tuple(range(-leaf.rank + 1, 0))
  return _all_axes(leaf)


def _layout_name(leaf: Leaf) -> str:
  if leaf.rank >= 2 and leaf.path[-1] in _OUT_LAST:
    return "default: per output neuron (last axis of an (in, out) kernel)"
  if leaf.rank >= 2 and leaf.path[-1] in _OUT_FIRST:
    return "default: per output neuron (first axis of an (out, in) weight)"
  return "default: whole tensor"


by_layout = LeafRule("default by layout", _layout_axes, _layout_name)
