"""The leaves of any parameter pytree, with readable paths and their stacked-layer axis.

Parameter trees come from many frameworks: plain and linen (Frozen)dicts, `nnx.State` and the
trees `nnx.Optimizer` passes to optax (each leaf inside an `nnx.Variable`, whose key path ends in a
`.value` attribute), Equinox modules (attribute names, lists of layers), Haiku's flat
`{"a/~/b": {"w": ...}}` dicts. `leaves` flattens any of them, in `jax.tree.leaves` order, into
`Leaf` records: a path of plain names (Haiku's "/"-joined module names split, a Variable's
trailing `value` dropped, list indices as "0", "1", ...), the leaf, and the axis on which it stacks
layers (None for one layer's tensor).

Stacked layers are never guessed from a name. A list index in a path is one layer (a separate
module), so a leaf under it is one layer's tensor. A leaf stacks layers only when that is
declared (`layer_axes`, e.g. {"layers": 0} or MaxText's {"decoder/layers": 1}) or recorded by the
framework: an `nnx.Variable` whose logical axis names (`out_sharding` / `sharding_names`, written by
`nnx.vmap` / `nnx.scan` with `transform_metadata={nnx.PARTITION_NAME: ...}`) name a layer axis.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import numpy as np
from flax import nnx

Path = tuple[str, ...]
LayerAxes = Mapping[str, int] | Callable[[Path, Any], int | None] | None

# Logical axis names that flax records for layers stacked by nnx.vmap / nnx.scan (this project's
# models and MaxText name it "layers"; flax's own examples also use these).
T = TypeVar("T")
LAYER_AXIS_NAMES = frozenset({"layers", "layer", "stack"})
_METADATA_NAME_KEYS = ("out_sharding", "sharding_names", "sharding")


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One parameter leaf.

  Attributes:
    path: its names, e.g. ("model", "layers", "0", "self_attn", "q_proj", "kernel").
    value: the array (or ShapeDtypeStruct / tracer).
    layer_axis: the axis on which it stacks layers, or None.
  """

  path: Path
  value: Any
  layer_axis: int | None = None

  @property
  def name(self) -> str:
    """The path joined with "/"."""
    return "/".join(self.path)

  @property
  def shape(self) -> tuple[int, ...]:
    """The leaf's shape."""
    return tuple(np.shape(self.value))

  @property
  def layer_shape(self) -> tuple[int, ...]:
    """The shape of one layer's tensor (the leaf's shape without the layer axis)."""
    return tuple(d for a, d in enumerate(self.shape) if a != self.layer_axis)

  @property
  def rank(self) -> int:
    """The rank of one layer's tensor."""
    return len(self.layer_shape)

  def per_layer_axes(self) -> tuple[int, ...]:
    """The leaf axes of one layer's tensor (every axis but the layer axis)."""
    return tuple(a for a in range(len(self.shape)) if a != self.layer_axis)


def _key_names(entry) -> list[str]:
  for attribute in ("key", "name", "idx"):
    if hasattr(entry, attribute):
      value = getattr(entry, attribute)
      # Haiku names modules "outer/~/inner": one component per module.
      return [part for part in value.split("/") if part] if isinstance(value, str) else [str(value)]
  return [str(entry)]


def path_names(key_path) -> Path:
  """A jax key path as a tuple of names, e.g. ('layers', '0', 'attn', 'query', 'kernel').

  A trailing `.value` attribute (the array inside an `nnx.Variable`) is dropped.
  """
  key_path = tuple(key_path)
  if key_path and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and key_path[-1].name in (
      "value", "raw_value"):
    key_path = key_path[:-1]
  return tuple(name for entry in key_path for name in _key_names(entry))


def is_variable(x) -> bool:
  """True for an `nnx.Variable` (a Param inside an nnx.State or nnx.Optimizer tree)."""
  return isinstance(x, nnx.Variable)


def _recorded_axis(variable) -> int | None:
  metadata = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
  for key in _METADATA_NAME_KEYS:
    names = metadata.get(key)
    if isinstance(names, tuple | list):
      hits = [i for i, n in enumerate(names) if n in LAYER_AXIS_NAMES]
      if hits:
        return hits[0]
  return None


def _matches_subtree(path: Path, subtree: tuple[str, ...]) -> int | None:
  """The index in `path` just after the first occurrence of `subtree`, or None."""
  n = len(subtree)
  for i in range(len(path) - n + 1):
    if path[i:i + n] == subtree:
      return i + n
  return None


def _declared_axis(layer_axes: LayerAxes, path: Path, value) -> int | None:
  if layer_axes is None:
    return None
  if callable(layer_axes):
    return layer_axes(path, value)
  for subtree, axis in layer_axes.items():
    end = _matches_subtree(path, tuple(subtree.split("/")))
    if end is None:
      continue
    if end < len(path) and path[end].isdigit():
      raise ValueError(f"layer_axes declares {subtree!r} stacked on axis {axis}, but its layers "
                       f"are a list ({'/'.join(path)}): a list index is one layer; drop it")
    return axis
  return None


def _check_axis(axis, path: Path, value) -> int | None:
  if axis is None:
    return None
  ndim = np.ndim(value)
  if not isinstance(axis, int | np.integer) or not -ndim <= axis < max(ndim, 1):
    raise ValueError(f"layer axis {axis!r} of {'/'.join(path)} is out of range for its shape "
                     f"{tuple(np.shape(value))}")
  return int(axis) % ndim


def leaves(params, layer_axes: LayerAxes = None) -> list[Leaf]:
  """Every leaf of `params`, in `jax.tree.leaves` order, with its path and layer axis.

  Args:
    params: any parameter pytree (dicts, nnx.State with Variables, Equinox modules, lists).
    layer_axes: stacked-layer declaration: None (only what nnx metadata records), a mapping
      from a subtree path ("layers", "decoder/layers", or a whole leaf path) to the axis on which
      the leaves under it stack layers, or a callable (path, leaf) -> axis or None.

  Returns:
    One `Leaf` per array leaf.

  Raises:
    ValueError: a declared subtree whose layers are a list, an axis out of range for a leaf, or
      leaves of one declared subtree with different layer counts. (A subtree that matches no leaf
      is no error: optax wrappers such as `optax.partition` pass parts of the tree.)
  """
  out = []
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_variable)[0]
  for key_path, node in flat:
    recorded = _recorded_axis(node) if is_variable(node) else None
    for inner_path, value in jax.tree_util.tree_flatten_with_path(node)[0]:
      path = path_names((*key_path, *inner_path))
      axis = _declared_axis(layer_axes, path, value)
      out.append(Leaf(path, value, _check_axis(recorded if axis is None else axis, path, value)))
  _check_declaration(layer_axes, out)
  return out


def _check_declaration(layer_axes: LayerAxes, entries: list[Leaf]) -> None:
  if not isinstance(layer_axes, Mapping):
    return
  for subtree in layer_axes:
    sizes = {e.shape[e.layer_axis] for e in entries
             if e.layer_axis is not None
             and _matches_subtree(e.path, tuple(subtree.split("/"))) is not None}
    if len(sizes) > 1:
      raise ValueError(f"layer_axes subtree {subtree!r}: its leaves stack different numbers of "
                       f"layers on the declared axis ({sorted(sizes)}): wrong axis?")


def recorded_layer_axes(params) -> dict[str, int]:
  """The layer axes that nnx metadata records, as a declaration for the same tree made pure.

  `nnx.to_pure_dict` drops the metadata; pass this as `layer_axes=` with the pure dict.

  Args:
    params: an nnx.State (or any tree of nnx.Variables), e.g. `nnx.state(model, nnx.Param)`.

  Returns:
    {leaf path: layer axis} for every leaf whose metadata names a layer axis.
  """
  return {e.name: e.layer_axis for e in leaves(params) if e.layer_axis is not None}


def has_variables(tree) -> bool:
  """Whether `tree` holds nnx Variables (whose metadata may record stacked layers)."""
  return any(map(is_variable, jax.tree.leaves(tree, is_leaf=is_variable)))


def remember_per_tree(compute: Callable[[Any, bool], T]) -> Callable[..., T]:
  """`compute(tree, refresh)`, remembered per tree (its leaf paths and shapes).

  `nnx.Optimizer` gives a transform's `init` the parameters as nnx Variables, whose metadata
  records stacked layers, but its `update` plain arrays: what was found at init is reused for the
  same paths and shapes. A transform calls the result with `refresh=True` where it must
  recompute (at init, or whenever the tree carries metadata).

  Args:
    compute: (tree, refresh) -> the value for that tree.

  Returns:
    f(tree, refresh=False) -> the remembered (or, refreshed, a newly computed) value.
  """
  found = {}

  def remembered(tree, refresh: bool = False) -> T:
    key = tuple((leaf.path, leaf.shape) for leaf in leaves(tree))
    if refresh or key not in found:
      found[key] = compute(tree, refresh)
    return found[key]

  return remembered
