"""Hessian-vector products over parameter pytrees, whole-model and block-restricted.

`hvp` computes H v by forward-over-reverse autodiff (one jvp of the gradient, about the cost of
two or three gradients) and falls back to reverse-over-reverse for code that blocks forward mode
(custom_vjp kernels). `mean_loss` turns a per-batch loss into the mean over a fixed list of
batches (the authors' code sums over micro-batches, which scales every eigenvalue by their
count). `Block` names one block of `bigmodel_jax.blocks` (one tensor, one layer slice of a stacked
tensor, or a finer cut) and `block_hvp` computes exactly H_bb v_b for it: the product is taken
with respect to that leaf only (the other leaves get no tangent) and masked to the block.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024), Sec. 3.
"""

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax import blocks as blocks_lib

LossFn = Callable[..., jax.Array]
MODES = ("auto", "forward_over_reverse", "reverse_over_reverse")


def _forward_over_reverse(loss_fn: LossFn, params, vector):
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def _reverse_over_reverse(loss_fn: LossFn, params, vector):
  return jax.grad(lambda p: optax.tree.vdot(jax.grad(loss_fn)(p), vector))(params)


def _forward_mode_works(loss_fn: LossFn, params, vector) -> bool:
  try:
    jax.eval_shape(lambda p, v: _forward_over_reverse(loss_fn, p, v), params, vector)
  except (TypeError, NotImplementedError, ValueError):
    return False
  return True


def hvp(loss_fn: LossFn, params, vector, mode: str = "auto"):
  """The Hessian-vector product H v of a scalar loss at `params`.

  Args:
    loss_fn: loss_fn(params) -> scalar (close over the batch, or use `mean_loss`).
    params: the parameter pytree (may be sharded; the product keeps the parameters' shardings).
    vector: a pytree with the structure, shapes and dtypes of `params`.
    mode: "forward_over_reverse" (jvp of grad), "reverse_over_reverse" (grad of <grad, v>), or
      "auto": forward-over-reverse unless tracing it fails (e.g. a custom_vjp kernel), then
      reverse-over-reverse.

  Returns:
    H v, a pytree like `params`.
  """
  if mode not in MODES:
    raise ValueError(f"hvp mode must be one of {MODES}, got {mode!r}")
  if mode == "auto":
    mode = ("forward_over_reverse" if _forward_mode_works(loss_fn, params, vector)
            else "reverse_over_reverse")
  if mode == "forward_over_reverse":
    return _forward_over_reverse(loss_fn, params, vector)
  return _reverse_over_reverse(loss_fn, params, vector)


def mean_loss(loss_fn: Callable, batches) -> LossFn:
  """The mean of `loss_fn(params, batch)` over a fixed list of batches (a mean, never a sum).

  Args:
    loss_fn: loss_fn(params, batch) -> scalar mean loss of one batch.
    batches: a list of batches (pytrees of equal shapes) or one pytree stacked on axis 0.

  Returns:
    f(params) -> scalar, evaluated batch by batch with `lax.scan` (memory of one batch).
  """
  if isinstance(batches, list | tuple):
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
  num = jax.tree.leaves(batches)[0].shape[0]

  def f(params):
    def body(total, batch):
      return total + loss_fn(params, batch), None

    first = jax.tree.map(lambda x: x[0], batches)
    zero = jnp.zeros_like(jax.eval_shape(loss_fn, params, first))
    total, _ = jax.lax.scan(body, zero, batches)
    return total / num

  return f


@dataclasses.dataclass(frozen=True)
class Block:
  """One Hessian block: entries of one leaf that share one block of `bigmodel_jax.blocks`.

  Attributes:
    path: the leaf path, e.g. ("layers", "attn", "query", "kernel").
    leaf_index: position of the leaf in `jax.tree.leaves(params)`.
    shape: the leaf's shape.
    cut: the `blocks.Blocks` of the leaf (of its part, for a leaf with several roles): the
      block spans `cut.axes` of the view `cut.shape(...)`; the other view axes index blocks.
    index: the block's index on those other axes, in their order.
    layer: the layer the block belongs to (stacked leaves), else None.
    part: (role name, axis, start, size) of the part holding the block, for a leaf with several
      roles (GPT-2's c_attn, Gemma's kv_einsum), else None.
  """

  path: tuple[str, ...]
  leaf_index: int
  shape: tuple[int, ...]
  cut: blocks_lib.Blocks
  index: tuple[int, ...]
  layer: int | None = None
  part: tuple[str, int, int, int] | None = None

  @property
  def name(self) -> str:
    """A readable name, e.g. "layers/attn/query/kernel[1,0]" or ".../c_attn/kernel:key[2]"."""
    role = ":" + self.part[0].split(":")[0] if self.part else ""
    suffix = "[" + ",".join(map(str, self.index)) + "]" if self.index else ""
    return "/".join(self.path) + role + suffix

  @property
  def part_shape(self) -> tuple[int, ...]:
    """The shape of the part holding the block (the leaf's shape without parts)."""
    if self.part is None:
      return self.shape
    _, axis, _, size = self.part
    return tuple(size if a == axis else d for a, d in enumerate(self.shape))

  @property
  def size(self) -> int:
    """Number of parameters in the block (the dimension of H_bb)."""
    return self.cut.block_size(self.part_shape)

  @property
  def index_axes(self) -> tuple[int, ...]:
    """The view axes that index blocks."""
    return tuple(a for a in range(len(self.cut.shape(self.part_shape))) if a not in self.cut.axes)

  @property
  def compile_key(self) -> tuple:
    """Blocks with equal keys differ only in `index` (one compiled function serves them)."""
    return self.leaf_index, self.part


def _leaf_blocks(i: int, leaf: blocks_lib.Leaf, spec) -> list[Block]:
  if isinstance(spec, blocks_lib.Parts):
    cuts = [(c, (name, spec.axis, start, size)) for c, name, start, size in zip(
        spec.parts, spec.names or [f"part {k}" for k in range(len(spec.parts))], spec.offsets(),
        spec.sizes)]
  else:
    cuts = [(spec, None)]
  out = []
  for cut, part in cuts:
    template = Block(leaf.path, i, leaf.shape, cut, (), None, part)
    view = cut.shape(template.part_shape)
    axes = template.index_axes
    layer_pos = None
    if leaf.layer_axis is not None:
      layer_view_axis = (leaf.layer_axis if cut.view is None else
                         blocks_lib.view_axis(template.part_shape, view, leaf.layer_axis))
      layer_pos = axes.index(layer_view_axis) if layer_view_axis in axes else None
    for index in itertools.product(*(range(view[a]) for a in axes)):
      layer = None if layer_pos is None else index[layer_pos]
      out.append(dataclasses.replace(template, index=tuple(index), layer=layer))
  return out


def list_blocks(params, partition=None, *, layer_axes=None, strict: bool = False,
                warn: bool = True) -> list[Block]:
  """Every block of `params` under a partition of `bigmodel_jax.blocks`.

  Args:
    params: the parameter pytree (arrays or ShapeDtypeStructs; any container).
    partition: anything `blocks.resolve` accepts, head-wise and multi-role blocks included (e.g.
      `blocks.transformer_rule()`, the Adam-mini blocks); None is one block per (per-layer)
      tensor, the paper's choice.
    layer_axes: stacked layers (see `bigmodel_jax.blocks.leaves`); None: nnx metadata only.
    strict: raise instead of warning when a leaf matches no rule of `partition`.
    warn: log the unrecognised-leaves warning (callers that list the same blocks again pass
      False).

  Returns:
    The blocks, leaf by leaf in tree order, then part by part, then in row-major order of the
    block index.
  """
  entries = blocks_lib.resolve_entries(partition, params, layer_axes=layer_axes,
                                       default=blocks_lib.per_tensor, warn=warn, strict=strict,
                                       who="hessian.list_blocks")
  return [b for i, (leaf, spec, _, _) in enumerate(entries) for b in _leaf_blocks(i, leaf, spec)]


def select_blocks(all_blocks: Sequence[Block], patterns: Sequence[str],
                  layers: Sequence[int] | None = None) -> list[Block]:
  """The blocks whose name path ends with one of `patterns` (component-wise), in given layers.

  Args:
    all_blocks: from `list_blocks`.
    patterns: path suffixes such as "attn/query/kernel" or "embed/embedding".
    layers: for blocks of stacked leaves, keep only these layers.

  Returns:
    The selected blocks in the order of `patterns`, then of the index.

  Raises:
    ValueError: naming a pattern that matches no block.
  """
  chosen = []
  for pattern in patterns:
    want = tuple(pattern.split("/"))
    hits = [b for b in all_blocks if b.path[-len(want):] == want
            and (layers is None or b.layer is None or b.layer in layers)]
    if not hits:
      raise ValueError(f"block pattern {pattern!r} matches no parameter block "
                       f"(layers={layers}); blocks are e.g. {[b.name for b in all_blocks[:5]]}")
    chosen += hits
  return chosen


def block_mask(block: Block, index=None, dtype=jnp.float32) -> jax.Array:
  """The 0/1 mask of `block` inside its leaf (`index` may be traced; default block.index)."""
  index = block.index if index is None else index
  view = block.cut.shape(block.part_shape)
  mask = jnp.ones(view, dtype=bool)
  for axis, i in zip(block.index_axes, index if len(block.index_axes) else ()):
    shape = [1] * len(view)
    shape[axis] = view[axis]
    mask = mask & (jnp.arange(view[axis]).reshape(shape) == i)
  mask = mask.reshape(block.part_shape)
  if block.part is not None:
    _, axis, start, size = block.part
    widths = [(0, 0)] * len(block.shape)
    widths[axis] = (start, block.shape[axis] - start - size)
    mask = jnp.pad(mask, widths)
  return mask.astype(dtype)


def _with_leaf(params, leaf_index: int, value):
  leaves, treedef = jax.tree.flatten(params)
  leaves[leaf_index] = value
  return jax.tree.unflatten(treedef, leaves)


def leaf_hvp(loss_fn: LossFn, params, leaf_index: int, vector: jax.Array,
             mode: str = "auto") -> jax.Array:
  """The product of the Hessian block of one whole leaf with `vector` (leaf-shaped).

  Only that leaf is differentiated, so the backward pass skips the other weight gradients.

  Args:
    loss_fn: loss_fn(params) -> scalar.
    params: the parameters.
    leaf_index: position of the leaf in `jax.tree.leaves(params)`.
    vector: an array with the leaf's shape.
    mode: as in `hvp`.

  Returns:
    H_{leaf,leaf} vector, leaf-shaped.
  """
  leaf = jax.tree.leaves(params)[leaf_index]
  restricted = lambda x: loss_fn(_with_leaf(params, leaf_index, x))
  return hvp(restricted, leaf, vector.astype(leaf.dtype), mode)


def block_hvp(loss_fn: LossFn, params, block: Block, vector: jax.Array, index=None,
              mode: str = "auto") -> jax.Array:
  """Exactly H_bb v_b for one block, as a leaf-shaped array that is zero off the block.

  Args:
    loss_fn: loss_fn(params) -> scalar.
    params: the parameters.
    block: the block (from `list_blocks`).
    vector: leaf-shaped; only its entries in the block are used.
    index: optional (traced) block index overriding `block.index`, so one compiled function
      serves every layer of a stacked leaf.
    mode: as in `hvp`.

  Returns:
    H_bb v_b embedded in the leaf's shape (zeros outside the block), in the leaf's dtype.
  """
  leaf = jax.tree.leaves(params)[block.leaf_index]
  mask = block_mask(block, index, leaf.dtype)
  return mask * leaf_hvp(loss_fn, params, block.leaf_index, mask * vector, mode)
