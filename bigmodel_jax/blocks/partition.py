"""The partition engine: any parameter pytree + any form of partition -> every leaf's blocks.

One function, `resolve`, serves Adam-mini, MoFO and the Hessian diagnostics. A partition is
  - None: the caller's default (Adam-mini: `transformer_rule()`, the paper's blocks),
  - a `RuleSet` or a list of `BlockRule` (rules as data, see `rules.py`, `families.py`),
  - a `LeafRule` (`per_tensor`, `per_element`, `by_layout`),
  - a callable (path, leaf) -> axes tuple, `Blocks` or `Parts`, in the whole leaf's axes (with
    `optax.inject_hyperparams` pass it in `static_args`: a callable would be taken for a schedule),
  - a pytree with the leaves of `params` whose leaves are axes tuples, `Blocks` or `Parts`.
Leaves that no rule recognises get `by_layout`'s documented default, and `resolve(...,
warn=True)` logs one warning listing them with what they got; `strict=True` raises instead.
"""

import logging
from collections.abc import Sequence
from typing import Any

import jax

from bigmodel_jax.blocks.defaults import LeafRule
from bigmodel_jax.blocks.leaves import LayerAxes, Leaf, leaves, path_names, remember_per_tree
from bigmodel_jax.blocks.rules import BlockRule, RuleSet
from bigmodel_jax.blocks.spec import Blocks, Spec, check_spec, is_spec

Partition = Any
_LOG = logging.getLogger("bigmodel_jax.blocks")


class UnrecognisedLeavesError(ValueError):
  """`strict=True` and some leaves match no rule."""


def is_axes(x) -> bool:
  """True for an axes tuple (a leaf of a pytree partition)."""
  return isinstance(x, tuple) and all(isinstance(a, int) for a in x)


def as_rule(partition: Partition):
  """The rule object of a partition given as a list of `BlockRule` (others unchanged)."""
  if isinstance(partition, list | tuple) and partition and all(
      isinstance(r, BlockRule) for r in partition):
    return RuleSet(partition)
  return partition


def _as_spec(value, leaf: Leaf) -> Spec:
  if is_axes(value):
    value = Blocks(tuple(value))
  if not is_spec(value):
    raise TypeError(f"partition for {leaf.name} must be an axes tuple, Blocks or Parts, "
                    f"got {value!r}")
  return check_spec(value, leaf.shape, leaf.name)


def _from_rule(rule, entries: Sequence[Leaf]) -> list[tuple[Spec, str, bool]]:
  if isinstance(rule, RuleSet):
    rule.check(entries)
  if isinstance(rule, RuleSet | LeafRule):
    return [(check_spec(s, e.shape, e.name), n, ok)
            for e, (s, n, ok) in ((e, rule.blocks_for(e)) for e in entries)]
  name = getattr(rule, "__name__", type(rule).__name__)
  return [(_as_spec(rule(e.path, e.value), e), name, True) for e in entries]


def _from_pytree(tree, entries: Sequence[Leaf]) -> list[tuple[Spec, str, bool]]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: is_axes(x) or is_spec(x))[0]
  if len(flat) != len(entries):
    raise ValueError(f"the partition pytree has {len(flat)} leaves, the parameters "
                     f"{len(entries)}: give it the parameters' structure, or pass rules "
                     "(blocks.transformer_rule(...), a list of blocks.BlockRule)")
  for (key_path, _), entry in zip(flat, entries):
    if path_names(key_path) != entry.path:  # same count, other structure: never by position
      raise ValueError(f"the partition pytree has {'/'.join(path_names(key_path))} where the "
                       f"parameters have {entry.name}: give it the parameters' structure")
  return [(_as_spec(s, e), "pytree of blocks", True) for (_, s), e in zip(flat, entries)]


def resolve_entries(partition: Partition, params, *, layer_axes: LayerAxes = None,
                    default: Partition = None, warn: bool = False, strict: bool = False,
                    who: str = "partition") -> list[tuple[Leaf, Spec, str, bool]]:
  """Every leaf with its blocks, the rule that gave them and whether it recognised the leaf.

  Args:
    partition: any form listed in the module docstring; None for `default`.
    params: the parameter pytree (arrays, ShapeDtypeStructs or tracers; any container).
    layer_axes: the stacked-layer declaration (see `blocks.leaves`).
    default: the partition used when `partition` is None.
    warn: log one warning listing the leaves no rule recognised and what they got.
    strict: raise `UnrecognisedLeavesError` instead.
    who: the caller, named in the warning (e.g. "adam_mini").

  Returns:
    (leaf, spec, rule name, recognised) per leaf, in `jax.tree.leaves(params)` order.
  """
  entries = leaves(params, layer_axes)
  rule = as_rule(default if partition is None else partition)
  if isinstance(rule, RuleSet | LeafRule) or callable(rule):
    resolved = _from_rule(rule, entries)
  else:
    resolved = _from_pytree(rule, entries)
  out = [(e, *r) for e, r in zip(entries, resolved)]
  unrecognised = [(e, s, n) for e, s, n, ok in out if not ok]
  if unrecognised and (warn or strict):
    _report(unrecognised, who, strict)
  return out


def _report(unrecognised, who: str, strict: bool) -> None:
  lines = [f"  {e.name} {e.shape}: {n} ({s.count(e.shape)} blocks)" for e, s, n in unrecognised]
  message = (f"{who}: {len(unrecognised)} parameter leaves match no partition rule and take "
             "the default below (name them with partition=blocks.transformer_rule(extra_rules="
             "[...]), measure a partition with hessian.propose_partition, or pass strict=True "
             "to make this an error; see blocks.describe):\n" + "\n".join(lines))
  if strict:
    raise UnrecognisedLeavesError(message)
  _LOG.warning(message)


def resolve(partition: Partition, params, **kwargs) -> list[Spec]:
  """The `Blocks` / `Parts` of every leaf of `params`, in `jax.tree.leaves` order.

  Args:
    partition: any form listed in the module docstring (None for `default`).
    params: the parameter pytree.
    **kwargs: `layer_axes`, `default`, `warn`, `strict`, `who` of `resolve_entries`.

  Returns:
    One spec per leaf.
  """
  return [spec for _, spec, _, _ in resolve_entries(partition, params, **kwargs)]


def memoized_resolver(partition: Partition, **kwargs):
  """`resolve` for a transform: init's blocks (and warning) are reused by update on the same tree.

  Args:
    partition: any partition form.
    **kwargs: `layer_axes`, `default`, `strict`, `who` of `resolve_entries`.

  Returns:
    f(tree, refresh=False) -> one spec per leaf; `refresh=True` (at init) resolves anew and warns.
  """
  return remember_per_tree(lambda tree, init: resolve(partition, tree, warn=init, **kwargs))


def resolve_tree(partition: Partition, params, **kwargs):
  """Like `resolve`, as a pytree with the structure of `params` (specs at its leaves)."""
  return jax.tree.unflatten(jax.tree.structure(params), resolve(partition, params, **kwargs))
