"""The Hessian block structure of a parameter pytree.

A *block* is a group of parameter entries that share one statistic: one second moment in Adam-mini,
one top-k selection in MoFO, one spectrum in the block-Hessian diagnostics. A partition assigns to
every leaf the tuple of axes that one block spans: the block statistic of a leaf is a reduction
over those axes with keepdims, so it is stored at the reduced shape. `()` means one block per
element; all axes means one block per tensor.

Layers stacked on a leading axis (this project's models keep every per-layer leaf under a path
component named `layers`, stacked along axis 0) are never reduced over that axis: one layer's
tensor is one tensor.

References: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Axes = tuple[int, ...]
Path = tuple[str, ...]
Rule = Callable[[Path, Any], Axes]
Partition = Rule | Any  # a rule, or a pytree of Axes matching the parameters

STACKED_LAYERS = "layers"


def path_names(key_path) -> Path:
  """A jax key path as a tuple of strings, e.g. ('layers', 'attn', 'query', 'kernel')."""
  names = []
  for entry in key_path:
    for attribute in ("key", "name", "idx"):
      if hasattr(entry, attribute):
        names.append(str(getattr(entry, attribute)))
        break
    else:
      names.append(str(entry))
  return tuple(names)


def stacked_axes(path: Path, leaf) -> Axes:
  """The leading axes of `leaf` that stack independent layers (never reduced)."""
  return (0,) if STACKED_LAYERS in path[:-1] and np.ndim(leaf) > 0 else ()


def per_tensor(path: Path, leaf) -> Axes:
  """One block per (per-layer) tensor: every axis but the stacked-layer axis."""
  skip = stacked_axes(path, leaf)
  return tuple(a for a in range(np.ndim(leaf)) if a not in skip)


def per_element(path: Path, leaf) -> Axes:
  """One block per entry (plain Adam)."""
  del path, leaf
  return ()


def _normalize(axes, path: Path, leaf) -> Axes:
  ndim = np.ndim(leaf)
  try:
    axes = tuple(int(a) for a in axes)
  except TypeError as e:
    raise TypeError(f"partition for {'/'.join(path)} must be a tuple of ints, got {axes!r}") from e
  if any(not -ndim <= a < ndim for a in axes):
    raise ValueError(f"partition axes {axes} out of range for {'/'.join(path)} "
                     f"with shape {np.shape(leaf)}")
  return tuple(sorted({a % ndim for a in axes}))


def resolve(partition: Partition | None, params, default: Rule = per_tensor):
  """The block axes of every leaf of `params`.

  Args:
    partition: a rule `(path, leaf) -> axes` (path: tuple of strings), a pytree of axes tuples
      with the structure of `params`, or None for `default`.
    params: the parameter pytree (arrays or ShapeDtypeStructs).
    default: the rule used when `partition` is None.

  Returns:
    A pytree with the structure of `params` whose leaves are sorted tuples of non-negative axes.
    (Tuples are pytree nodes: use `jax.tree.map(..., is_leaf=is_axes)` over it.)
  """
  rule = default if partition is None else partition
  if callable(rule):
    return jax.tree_util.tree_map_with_path(
        lambda kp, leaf: _normalize(rule(path_names(kp), leaf), path_names(kp), leaf), params)
  leaves_with_paths = jax.tree_util.tree_leaves_with_path(params)
  axes_leaves = jax.tree.leaves(rule, is_leaf=is_axes)
  if len(axes_leaves) != len(leaves_with_paths):
    raise ValueError(f"partition pytree has {len(axes_leaves)} leaves, params have "
                     f"{len(leaves_with_paths)}")
  normalized = [_normalize(axes, path_names(kp), leaf)
                for (kp, leaf), axes in zip(leaves_with_paths, axes_leaves)]
  return jax.tree.unflatten(jax.tree.structure(params), normalized)


def is_axes(x) -> bool:
  """True for an axes tuple (a leaf of a resolved partition)."""
  return isinstance(x, tuple) and all(isinstance(a, int | np.integer) for a in x)


def block_mean(x: jax.Array, axes: Axes) -> jax.Array:
  """Mean of `x` over each block, at the reduced shape (keepdims), in float32 or wider."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.mean(x, axis=axes, keepdims=True) if axes else x


def block_shape(shape: tuple[int, ...], axes: Axes) -> tuple[int, ...]:
  """Shape of a per-block statistic: `shape` with the block axes set to 1."""
  return tuple(1 if a in axes else d for a, d in enumerate(shape))


def num_blocks(shape: tuple[int, ...], axes: Axes) -> int:
  """Number of blocks of a leaf of `shape` partitioned over `axes`."""
  return int(np.prod(block_shape(shape, axes), dtype=np.int64))
