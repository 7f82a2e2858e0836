"""Partition rules as data: `BlockRule` records and the `RuleSet` that applies them.

A rule names the leaves it applies to by a path pattern, matched against the *end* of the leaf's
path component by component (whole names or `fnmatch` globs such as "Dense_*", never substrings),
and the rank of one layer's tensor; it says how one layer's tensor is cut, in negative axes (so a
stacked leaf, whatever its layer axis, is cut the same way). A fused projection kernel whose heads
are not visible in its shape (HF-Flax `q_proj` (D, H*Dh), Equinox `query_proj` (H*Dh, D)) names
the axis holding H*Dh (`heads_axis`); it is viewed at (.., H, Dh, ..) with the head size from
`Heads` (head_dim, or width / num_heads given by the user: shapes cannot tell it). A leaf with
several roles side by side (GPT-2's `c_attn`, Gemma's `kv_einsum`) has `roles`: one `Cut` per role.
"""

import dataclasses
import fnmatch
from collections.abc import Sequence

from bigmodel_jax.blocks.defaults import by_layout, in_leaf_coordinates
from bigmodel_jax.blocks.leaves import Leaf, Path
from bigmodel_jax.blocks.spec import Axes, Blocks, Parts, Spec, check_spec

Component = str | tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Heads:
  """What the shapes of fused (.., heads * head_dim) kernels cannot tell.

  Attributes:
    head_dim: the head size (takes precedence).
    num_heads: the number of query heads (head size = width / num_heads for queries).
    num_kv_heads: the number of key/value heads (grouped-query attention).
  """

  head_dim: int | None = None
  num_heads: int | None = None
  num_kv_heads: int | None = None

  def size(self, width: int, kv: bool, where: str) -> int:
    """The head size of a fused axis of `width` entries (query heads, or kv heads if `kv`)."""
    count = self.num_kv_heads if kv else self.num_heads
    if self.head_dim is not None:
      size = self.head_dim
    elif count is not None:
      size = width // count
    else:
      raise ValueError(
          f"{where}: a fused (.., heads*head_dim) kernel; head-wise blocks need the head size: "
          "pass partition=blocks.transformer_rule(head_dim=...) (or num_heads= and "
          "num_kv_heads=); it is never guessed from the width")
    if size <= 0 or width % size:
      raise ValueError(f"{where}: its fused axis ({width}) is not a multiple of head_dim={size}")
    return size


@dataclasses.dataclass(frozen=True)
class Cut:
  """How one role's tensor is cut into blocks.

  Attributes:
    name: the role, e.g. "query: per head".
    axes: negative axes reduced within one block (of the head view when `heads_axis` is set).
    heads_axis: negative axis holding heads * head_dim, split into (heads, head_dim) first.
    kv: whether those heads are key/value heads (grouped-query attention) or query heads.
  """

  name: str
  axes: Axes
  heads_axis: int | None = None
  kv: bool = False

  def __post_init__(self):
    if any(a >= 0 for a in self.axes) or (self.heads_axis is not None and self.heads_axis >= 0):
      raise ValueError(f"rule {self.name!r}: axes {self.axes} and heads_axis must be negative "
                       "(counted from the end, so stacked layers keep their axis)")

  def blocks(self, shape: tuple[int, ...], heads: Heads, where: str) -> Blocks:
    """The Blocks of one layer's tensor of `shape`."""
    if self.heads_axis is None:
      return check_spec(Blocks(self.axes), shape, where)
    axis = self.heads_axis % len(shape)
    size = heads.size(shape[axis], self.kv, f"{where} {shape} (rule {self.name!r})")
    view = (*shape[:axis], shape[axis] // size, size, *shape[axis + 1:])
    return check_spec(Blocks(self.axes, view), shape, where)


def _component_matches(want: Component, got: str) -> bool:
  options = (want,) if isinstance(want, str) else want
  return any(fnmatch.fnmatchcase(got, o) if any(c in o for c in "*?[") else got == o
             for o in options)


@dataclasses.dataclass(frozen=True)
class BlockRule:
  """One partition rule: which leaves it applies to and how one layer's tensor is cut.

  Attributes:
    name: shown by `describe` and in errors.
    pattern: components matched against the end of the leaf path (names, tuples of alternative
      names, or fnmatch globs; "*" is any one component).
    axes: negative axes one block spans (of the head view when `heads_axis` is set); `()` is one
      block per element. Ignored when `roles` is set.
    ndim: the rank of one layer's tensor, or None for any rank. A leaf whose path matches but
      whose rank differs is left to the next rule (an error for a required rule).
    heads_axis: negative axis of a fused (.., H*Dh, ..) kernel, split into (H, Dh).
    head_dim: the head size for `heads_axis` (overrides the rule set's `Heads`).
    kv: the fused heads are key/value heads.
    roles: several roles side by side along `roles_axis`, in equal parts, one `Cut` each.
    roles_axis: the negative axis along which the roles sit.
    optional: built-in rules are optional; a required rule (the default for user rules) that
      matches no leaf is an error naming it.
    last_axis: "larger" or "smaller": the rule applies only when the last axis of one layer's
      tensor is longer (shorter) than the one before it (e.g. Gemma's gating_einsum, stored as
      (2, F, D) or (2, D, F): the hidden size F exceeds the width D in every Gemma).
  """

  name: str
  pattern: tuple[Component, ...]
  axes: Axes = ()
  ndim: int | None = None
  heads_axis: int | None = None
  head_dim: int | None = None
  kv: bool = False
  roles: tuple[Cut, ...] = ()
  roles_axis: int | None = None
  optional: bool = False
  last_axis: str | None = None

  def __post_init__(self):
    if not self.pattern:
      raise ValueError(f"rule {self.name!r}: empty pattern")
    Cut(self.name, self.axes, self.heads_axis, self.kv)  # validates the axes
    if bool(self.roles) != (self.roles_axis is not None) or (
        self.roles_axis is not None and self.roles_axis >= 0):
      raise ValueError(f"rule {self.name!r}: roles need a negative roles_axis")

  def shape_matches(self, shape: tuple[int, ...]) -> bool:
    """Whether one layer's tensor of `shape` has this rule's rank and last-axis order."""
    if self.ndim is not None and len(shape) != self.ndim:
      return False
    if self.last_axis is None or len(shape) < 2:
      return True
    return shape[-1] > shape[-2] if self.last_axis == "larger" else shape[-1] < shape[-2]

  def path_matches(self, path: Path) -> bool:
    """Whether `pattern` is a component-wise suffix of `path`."""
    if len(self.pattern) > len(path):
      return False
    return all(want == "*" or _component_matches(want, got)
               for want, got in zip(reversed(self.pattern), reversed(path)))

  def layer_blocks(self, shape: tuple[int, ...], heads: Heads, where: str) -> Spec:
    """The cut of one layer's tensor of `shape`."""
    if self.head_dim is not None:
      heads = dataclasses.replace(heads, head_dim=self.head_dim)
    if not self.roles:
      return Cut(self.name, self.axes, self.heads_axis, self.kv).blocks(shape, heads, where)
    axis = self.roles_axis % len(shape)
    if shape[axis] % len(self.roles):
      raise ValueError(f"{where} {shape}: axis {self.roles_axis} ({shape[axis]}) does not split "
                       f"into the {len(self.roles)} roles of rule {self.name!r}")
    size = shape[axis] // len(self.roles)
    part_shape = tuple(size if a == axis else d for a, d in enumerate(shape))
    return Parts(axis, (size,) * len(self.roles),
                 tuple(c.blocks(part_shape, heads, where) for c in self.roles),
                 tuple(c.name for c in self.roles))


class RuleSet:
  """A partition built from `BlockRule`s: first match wins; unmatched leaves take `fallback`.

  Not callable (so `optax.inject_hyperparams` never takes it for a schedule): the engine
  (`blocks.resolve`) calls `blocks_for`.
  """

  def __init__(self, rules: Sequence[BlockRule], heads: Heads = Heads(), fallback=None):
    """Builds the rule set.

    Args:
      rules: the rules, in priority order.
      heads: head sizes for fused kernels (see `Heads`).
      fallback: a `blocks.LeafRule` for leaves no rule matches; None: `blocks.by_layout`.
    """
    self.rules = tuple(rules)
    for rule in self.rules:
      if not isinstance(rule, BlockRule):
        raise TypeError(f"RuleSet takes BlockRule records, got {rule!r}")
    self.heads = heads
    self.fallback = by_layout if fallback is None else fallback

  def match(self, leaf: Leaf) -> BlockRule | None:
    """The first rule whose pattern and rank match the leaf, or None."""
    for rule in self.rules:
      if not rule.path_matches(leaf.path):
        continue
      if rule.shape_matches(leaf.layer_shape):
        return rule
      if not rule.optional:
        raise ValueError(f"{leaf.name} {leaf.shape} matches the path of rule {rule.name!r} but "
                         f"has rank {leaf.rank} per layer, not {rule.ndim}")
    return None

  def blocks_for(self, leaf: Leaf) -> tuple[Spec, str, bool]:
    """(the leaf's cut, the rule's name, whether a rule recognised it)."""
    rule = self.match(leaf)
    if rule is None:
      spec, name, _ = self.fallback.blocks_for(leaf)
      return spec, name, False
    spec = rule.layer_blocks(leaf.layer_shape, self.heads, leaf.name)
    return in_leaf_coordinates(spec, leaf), rule.name, True

  def check(self, entries: Sequence[Leaf]) -> None:
    """Raises ValueError naming every required rule that matches no leaf."""
    used = {r.name for r in map(self.match, entries) if r is not None}
    unused = [r.name for r in self.rules if not r.optional and r.name not in used]
    if unused:
      raise ValueError(f"partition rules {unused} match no parameter leaf")

  def __repr__(self):
    return f"RuleSet({[r.name for r in self.rules]}, {self.heads})"
