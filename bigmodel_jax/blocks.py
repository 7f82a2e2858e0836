"""The Hessian block structure of a parameter pytree.

A *block* is a group of parameter entries that share one statistic: one second moment in Adam-mini,
one top-k selection in MoFO, one spectrum in the block-Hessian diagnostics. A partition assigns to
every leaf the tuple of axes that one block spans: the block statistic of a leaf is a reduction
over those axes with keepdims, so it is stored at the reduced shape. `()` means one block per
element; all axes means one block per tensor.

Layers stacked on a leading axis (this project's models keep every per-layer leaf under a path
component named `layers`, stacked along axis 0) are never reduced over that axis: one layer's
tensor is one tensor.

Built-in Transformer rules (`transformer_rules`) are data: `BlockRule` records, each a path
pattern matched as a suffix of the leaf path component by component (never by substring), the
rank of one layer's tensor, and the axes to reduce given as negative axes (so a stacked leaf
with one more leading axis is cut the same way). `RuleSet` turns a rule list into a partition
(first match wins; unmatched leaves fall back to one block per tensor and are flagged);
`describe` prints the resulting table.

Head-wise blocks of 2-D kernels. A fused projection kernel (D, H*Dh) (HF-Flax `q_proj`, flax
`Dense`) does not show its heads in its shape, and width / num_heads is *not* always the head
size (Llama variants and GQA break it). Such a rule carries `heads_axis` (the axis holding
H*Dh) and needs an explicit `head_dim` (`transformer_rules(head_dim=...)`); the leaf is then
viewed at (..., H, Dh, ...) (a free row-major reshape) and reduced over that view, so its block
statistic has shape (1, H, 1). A partition entry that needs such a view is a `Blocks(axes,
view)`; `resolve_blocks` returns them for every leaf, `resolve` (plain axes) refuses them by
name. Without `head_dim`, matching a 2-D query/key kernel is an error naming the leaf.

References: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025).
"""

import dataclasses
import logging
from collections.abc import Callable, Sequence
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
  if isinstance(axes, Blocks):
    if axes.view is not None:
      raise ValueError(f"partition for {'/'.join(path)} views the leaf {np.shape(leaf)} at "
                       f"{axes.view} (head-wise blocks of a fused kernel): use resolve_blocks")
    axes = axes.axes
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
  if isinstance(rule, RuleSet):
    rule.check(params)
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


# ---------------------------------------------------------------------------------------------
# Blocks over a reshaped view, rules as data, and the built-in Transformer rules.


@dataclasses.dataclass(frozen=True)
class Blocks:
  """How one leaf is cut into blocks: a reduction over `axes` of the leaf viewed at `view`.

  Attributes:
    axes: sorted non-negative axes of the view (of the leaf when `view` is None) that one block
      spans; `()` is one block per element.
    view: None, or the shape the leaf is reshaped to before reducing (a row-major reshape that
      splits one axis, e.g. (D, H*Dh) -> (D, H, Dh) for head-wise blocks).
  """

  axes: Axes
  view: tuple[int, ...] | None = None

  def shape(self, leaf_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape that is reduced: `view`, or the leaf's own shape."""
    return tuple(leaf_shape) if self.view is None else self.view

  def stat_shape(self, leaf_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of the per-block statistic (keepdims over the view)."""
    return block_shape(self.shape(leaf_shape), self.axes)

  def count(self, leaf_shape: Sequence[int]) -> int:
    """Number of blocks."""
    return num_blocks(self.shape(leaf_shape), self.axes)


def _as_blocks(spec, path: Path, leaf) -> Blocks:
  if isinstance(spec, Blocks) and spec.view is not None:
    if int(np.prod(spec.view, dtype=np.int64)) != int(np.size(leaf)):
      raise ValueError(f"partition for {'/'.join(path)}: view {spec.view} does not fit the "
                       f"leaf's shape {np.shape(leaf)}")
    view_leaf = jax.ShapeDtypeStruct(spec.view, jnp.float32)
    return Blocks(_normalize(spec.axes, path, view_leaf), spec.view)
  return Blocks(_normalize(spec, path, leaf))


def is_blocks(x) -> bool:
  """True for a `Blocks` (a leaf of `resolve_blocks`)."""
  return isinstance(x, Blocks)


def resolve_blocks(partition: Partition | None, params, default: Rule = per_tensor):
  """Like `resolve`, but every leaf becomes a `Blocks` (rules may return reshaped views).

  Args:
    partition: a rule `(path, leaf) -> axes or Blocks`, a `RuleSet`, a pytree of axes tuples or
      `Blocks` with the structure of `params`, or None for `default`.
    params: the parameter pytree (arrays or ShapeDtypeStructs).
    default: the rule used when `partition` is None.

  Returns:
    A pytree with the structure of `params` whose leaves are `Blocks`.
  """
  rule = default if partition is None else partition
  if isinstance(rule, RuleSet):
    rule.check(params)
  if callable(rule):
    return jax.tree_util.tree_map_with_path(
        lambda kp, leaf: _as_blocks(rule(path_names(kp), leaf), path_names(kp), leaf), params)
  leaves_with_paths = jax.tree_util.tree_leaves_with_path(params)
  specs = jax.tree.leaves(rule, is_leaf=lambda x: is_axes(x) or is_blocks(x))
  if len(specs) != len(leaves_with_paths):
    raise ValueError(f"partition pytree has {len(specs)} leaves, params have "
                     f"{len(leaves_with_paths)}")
  resolved = [_as_blocks(spec, path_names(kp), leaf)
              for (kp, leaf), spec in zip(leaves_with_paths, specs)]
  return jax.tree.unflatten(jax.tree.structure(params), resolved)


Component = str | tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BlockRule:
  """One partition rule: which leaves it applies to and how they are cut.

  Attributes:
    name: shown by `describe`, used in error messages.
    pattern: path components matched against the *end* of the leaf path, component by
      component (exact names, never substrings). A component is a name, a tuple of alternative
      names, or "*" (any one component). ("query", "kernel") matches "layers/attn/query/kernel"
      but not "layers/attn/my_query/kernel".
    axes: the axes one block spans, as negative axes of one layer's tensor (of its head view
      when `heads_axis` is set), so a leaf stacked on a leading `layers` axis is cut the same
      way. `()` is one block per element.
    ndim: the rank of one layer's tensor, or None for any rank. A leaf whose path matches but
      whose rank differs is not matched by this rule (the next rule is tried); for a required
      rule this is an error.
    heads_axis: for fused 2-D kernels (D, H*Dh): the negative axis holding H*Dh. The leaf is
      viewed with that axis split into (H, head_dim) and `axes` refer to that view.
    head_dim: the head size for `heads_axis`; must be given explicitly (never width / heads).
    optional: built-in rules are optional (a model uses one naming convention of several); a
      required rule (the default for user rules) that matches no leaf is an error naming it.
  """

  name: str
  pattern: tuple[Component, ...]
  axes: Axes
  ndim: int | None = None
  heads_axis: int | None = None
  head_dim: int | None = None
  optional: bool = False

  def __post_init__(self):
    if any(a >= 0 for a in self.axes):
      raise ValueError(f"rule {self.name!r}: axes {self.axes} must be negative (counted from "
                       "the end, so stacked layers keep their leading axis)")
    if self.heads_axis is not None and self.heads_axis >= 0:
      raise ValueError(f"rule {self.name!r}: heads_axis {self.heads_axis} must be negative")
    if not self.pattern:
      raise ValueError(f"rule {self.name!r}: empty pattern")

  def path_matches(self, path: Path) -> bool:
    """Whether `pattern` is a component-wise suffix of `path`."""
    if len(self.pattern) > len(path):
      return False
    for want, got in zip(reversed(self.pattern), reversed(path)):
      if want == "*":
        continue
      if got not in ((want,) if isinstance(want, str) else want):
        return False
    return True

  def blocks(self, path: Path, leaf) -> Blocks:
    """The Blocks of a leaf this rule matched (the head view when `heads_axis` is set)."""
    shape = tuple(np.shape(leaf))
    where = "/".join(path)
    if self.heads_axis is None:
      return _as_blocks(self.axes, path, leaf)
    if self.head_dim is None:
      raise ValueError(
          f"{where} {shape} matches rule {self.name!r}, a fused (.., heads*head_dim) kernel: "
          "head-wise blocks need an explicit head size; pass "
          "blocks.transformer_rules(head_dim=...) (it is never inferred as width / heads)")
    axis = self.heads_axis % len(shape)
    if shape[axis] % self.head_dim:
      raise ValueError(f"{where} {shape}: axis {self.heads_axis} ({shape[axis]}) is not a "
                       f"multiple of head_dim={self.head_dim} (rule {self.name!r})")
    view = (*shape[:axis], shape[axis] // self.head_dim, self.head_dim, *shape[axis + 1:])
    return _as_blocks(Blocks(self.axes, view), path, leaf)


def layer_axes(path: Path, leaf) -> Axes:
  """The leading stacked-layer axes of a leaf, for rule matching.

  Like `stacked_axes`, but a `layers` component followed by an integer index (HF-Flax
  `layers/0/...`, one module per layer) marks an unstacked leaf.
  """
  if STACKED_LAYERS not in path[:-1] or np.ndim(leaf) == 0:
    return ()
  i = path.index(STACKED_LAYERS)
  return () if path[i + 1].isdigit() else (0,)


def _per_layer_tensor(path: Path, leaf) -> Axes:
  skip = layer_axes(path, leaf)
  return tuple(a for a in range(np.ndim(leaf)) if a not in skip)


FALLBACK = "fallback: one block per tensor"


class RuleSet:
  """A partition built from a list of `BlockRule`: first match wins, then a flagged fallback.

  A RuleSet is a rule `(path, leaf) -> axes or Blocks` usable wherever a partition is; through
  `resolve` / `resolve_blocks` it also checks that every required rule matched some leaf.
  """

  def __init__(self, rules: Sequence[BlockRule], fallback: Rule = _per_layer_tensor):
    """Builds the rule set.

    Args:
      rules: the rules, in priority order.
      fallback: the rule for leaves no rule matches (default: one block per per-layer tensor).
    """
    self.rules = tuple(rules)
    for rule in self.rules:
      if not isinstance(rule, BlockRule):
        raise TypeError(f"RuleSet takes BlockRule records, got {rule!r}")
    self.fallback = fallback

  def match(self, path: Path, leaf) -> BlockRule | None:
    """The first rule whose pattern and rank match the leaf, or None (fallback)."""
    rank = np.ndim(leaf) - len(layer_axes(path, leaf))
    for rule in self.rules:
      if not rule.path_matches(path):
        continue
      if rule.ndim is None or rule.ndim == rank:
        return rule
      if not rule.optional:
        raise ValueError(f"{'/'.join(path)} {tuple(np.shape(leaf))} matches the path of rule "
                         f"{rule.name!r} but has rank {rank} per layer, not {rule.ndim}")
    return None

  def __call__(self, path: Path, leaf):
    rule = self.match(path, leaf)
    if rule is None:
      return self.fallback(path, leaf)
    spec = rule.blocks(path, leaf)
    return spec.axes if spec.view is None else spec

  def check(self, params) -> None:
    """Raises ValueError naming every required rule that matches no leaf of `params`."""
    used = set()
    for kp, leaf in jax.tree_util.tree_leaves_with_path(params):
      rule = self.match(path_names(kp), leaf)
      if rule is not None:
        used.add(rule.name)
    unused = [r.name for r in self.rules if not r.optional and r.name not in used]
    if unused:
      raise ValueError(f"partition rules {unused} match no parameter leaf")

  def fallback_leaves(self, params) -> list[str]:
    """Paths of the leaves no rule matched (they take the fallback)."""
    return ["/".join(path_names(kp)) for kp, leaf in jax.tree_util.tree_leaves_with_path(params)
            if self.match(path_names(kp), leaf) is None]

  def __repr__(self):
    return f"RuleSet({[r.name for r in self.rules]})"


_Q = ("query", "q_proj")
_K = ("key", "k_proj")
_V = ("value", "v_proj")
_O = ("out", "o_proj", "out_proj")
_MLP = ("up", "gate", "down", "up_proj", "gate_proj", "down_proj", "fc1", "fc2", "wi", "wi_0",
        "wi_1", "wo")
_TOKEN_EMBED = ("embed", "embed_tokens", "wte", "word_embeddings", "tok_embeddings")
_POS_EMBED = ("pos_embed", "wpe", "position_embeddings")
_NORMS_HF = ("input_layernorm", "post_attention_layernorm", "norm", "final_layernorm")


def transformer_rules(head_dim: int | None = None, whole_value: bool = False
                      ) -> list[BlockRule]:
  """The Adam-mini partition of a decoder Transformer (paper, final version; authors' code v1.1).

  | leaves | block |
  | --- | --- |
  | `bias` (any) | one per element (plain Adam) |
  | token embedding (V, D) `embed`/`embed_tokens`/`wte`/... `embedding` | one per token (row) |
  | position table `pos_embed`/`wpe` | the whole tensor (the authors' code: `wpe` is no
    "embed" name there) |
  | `lm_head/kernel` (D, V), flax (in, out) | one per output token (column) |
  | query, key (D, H, Dh) (this project, flax DenseGeneral) | one per head (GQA: K key blocks) |
  | `q_proj`/`k_proj`/`query`/`key` (D, H*Dh) (HF-Flax, flax Dense) | one per head; needs
    `head_dim` |
  | value (D, K, Dh) / (D, K*Dh) | one per output neuron (`whole_value`: the whole matrix) |
  | attention out (H, Dh, D) / `o_proj` (H*Dh, D) | one per output neuron |
  | MLP `up`/`gate`/`down`, `*_proj`, `fc1`/`fc2`, T5 `wi`/`wo` (in, out) | one per output neuron|
  | norm `scale` (D,), HF-Flax `*layernorm/weight`, `norm/weight` | the whole (per-layer) tensor|

  Leaves of this project's models carry a leading stacked-layer axis under `layers`; the axes
  are negative, so each layer is cut separately. Every rule is optional (a model uses one of the
  naming conventions); leaves no rule matches (e.g. HF GPT-2's fused `c_attn`) fall back to one
  block per tensor and are flagged by `describe`.

  Args:
    head_dim: head size for fused 2-D query/key kernels; None makes matching one an error.
    whole_value: one block for the whole value matrix (the authors' option for short runs).

  Returns:
    The rules, in priority order (first match wins).
  """
  value_3d = (-3, -2, -1) if whole_value else (-3,)
  value_2d = (-2, -1) if whole_value else (-2,)
  rule = lambda *args, **kw: BlockRule(*args, optional=True, **kw)
  return [
      rule("bias: per element", ("bias",), ()),
      rule("token embedding: per token", (_TOKEN_EMBED, "embedding"), (-1,), ndim=2),
      rule("position embedding: whole tensor", (_POS_EMBED, "embedding"), (-2, -1), ndim=2),
      rule("lm_head: per token", ("lm_head", "kernel"), (-2,), ndim=2),
      rule("query: per head", (_Q, "kernel"), (-3, -1), ndim=3),
      rule("key: per kv head", (_K, "kernel"), (-3, -1), ndim=3),
      rule("query (fused heads): per head", (_Q, "kernel"), (-3, -1), ndim=2, heads_axis=-1,
           head_dim=head_dim),
      rule("key (fused heads): per kv head", (_K, "kernel"), (-3, -1), ndim=2, heads_axis=-1,
           head_dim=head_dim),
      rule("value: " + ("whole tensor" if whole_value else "per output neuron"),
           (_V, "kernel"), value_3d, ndim=3),
      rule("value (fused heads): " + ("whole tensor" if whole_value else "per output neuron"),
           (_V, "kernel"), value_2d, ndim=2),
      rule("attn out: per output neuron", (_O, "kernel"), (-3, -2), ndim=3),
      rule("attn out (fused heads): per output neuron", (_O, "kernel"), (-2,), ndim=2),
      rule("mlp: per output neuron", (_MLP, "kernel"), (-2,), ndim=2),
      rule("norm scale: whole tensor", ("scale",), (-1,), ndim=1),
      rule("norm weight: whole tensor", (_NORMS_HF, "weight"), (-1,), ndim=1),
  ]


def transformer_rule(head_dim: int | None = None, whole_value: bool = False) -> RuleSet:
  """`RuleSet(transformer_rules(head_dim, whole_value))`: the default Adam-mini partition."""
  return RuleSet(transformer_rules(head_dim, whole_value))


def _rule_name(partition, path: Path, leaf) -> tuple[str, bool]:
  if isinstance(partition, RuleSet):
    rule = partition.match(path, leaf)
    return (FALLBACK, True) if rule is None else (rule.name, False)
  if partition is None:
    return "per_tensor (default)", False
  if callable(partition):
    return getattr(partition, "__name__", type(partition).__name__), False
  return "pytree of axes", False


def describe(params, rules=None, *, file=None) -> str:
  """Prints (and returns) the partition table: leaf, shape, number of blocks, rule.

  Args:
    params: the parameter pytree (arrays or ShapeDtypeStructs).
    rules: a list of `BlockRule`, a `RuleSet`, any partition `resolve_blocks` accepts, or None
      for `transformer_rule()`.
    file: where to print (default stdout); the table is returned either way.

  Returns:
    The table as a string. Fallback leaves are marked "<- FALLBACK" and counted at the end.

  Raises:
    ValueError: naming a required rule that matches no leaf.
  """
  if rules is None:
    rules = transformer_rule()
  elif isinstance(rules, list | tuple) and rules and all(isinstance(r, BlockRule) for r in rules):
    rules = RuleSet(rules)
  resolved = resolve_blocks(rules, params)
  rows, fallbacks, total = [], 0, 0
  flat = jax.tree_util.tree_leaves_with_path(params)
  for (kp, leaf), spec in zip(flat, jax.tree.leaves(resolved, is_leaf=is_blocks)):
    path = path_names(kp)
    name, flagged = _rule_name(rules, path, leaf)
    count = spec.count(np.shape(leaf))
    total += count
    fallbacks += flagged
    rows.append(("/".join(path), str(tuple(np.shape(leaf))), str(count),
                 str(spec.stat_shape(np.shape(leaf))), name + ("  <- FALLBACK" if flagged else "")))
  header = ("leaf", "shape", "blocks", "block stat shape", "rule")
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]
  lines = [fmt(header), fmt((*tuple("-" * w for w in widths), "-" * 4))]
  lines += [fmt(r) for r in rows]
  lines.append(f"{len(rows)} leaves, {total} blocks, {fallbacks} fallback leaves")
  table = "\n".join(lines)
  print(table, file=file)
  if fallbacks:
    logging.getLogger(__name__).warning("%d parameter leaves use the fallback partition", fallbacks)
  return table
