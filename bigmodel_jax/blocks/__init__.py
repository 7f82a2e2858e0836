"""The Hessian block structure of any parameter pytree, shared by Adam-mini, MoFO and the
block-Hessian diagnostics.

A *block* is a group of parameter entries that share one statistic: one second moment in Adam-mini,
one top-k selection in MoFO, one spectrum in the diagnostics. `resolve(partition, params)` gives
every leaf's `Blocks` (axes of a view reduced together) or `Parts` (several roles on one leaf).

- `leaves.py`: any pytree (dicts, nnx.State / nnx.Optimizer trees, Equinox modules, Haiku dicts,
  lists of layers) -> `Leaf` records with readable paths and their stacked-layer axis (declared
  or recorded by nnx, never guessed from a name).
- `spec.py`: `Blocks`, `Parts`, `reduce_blocks`, `expand_blocks`.
- `rules.py`: `BlockRule`, `Cut`, `Heads`, `RuleSet` (rules as data).
- `families.py`: the paper's blocks under every recognised family's names and layouts.
- `defaults.py`: `per_tensor`, `per_element`, `by_layout` (what an unrecognised leaf gets).
- `partition.py`: `resolve` (the engine; warns about unrecognised leaves, or `strict`).
- `describe.py`: the table for people.

References: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025).
"""

from bigmodel_jax.blocks.defaults import LeafRule, by_layout, per_element, per_tensor
from bigmodel_jax.blocks.describe import describe
from bigmodel_jax.blocks.families import transformer_rule, transformer_rules
from bigmodel_jax.blocks.leaves import (
    LAYER_AXIS_NAMES,
    LayerAxes,
    Leaf,
    has_variables,
    is_variable,
    leaves,
    path_names,
    recorded_layer_axes,
    remember_per_tree,
)
from bigmodel_jax.blocks.partition import (
    UnrecognisedLeavesError,
    as_rule,
    is_axes,
    memoized_resolver,
    resolve,
    resolve_entries,
    resolve_tree,
)
from bigmodel_jax.blocks.rules import BlockRule, Cut, Heads, RuleSet
from bigmodel_jax.blocks.spec import (
    Blocks,
    Parts,
    block_shape,
    expand_blocks,
    is_spec,
    num_blocks,
    pieces,
    reduce_blocks,
    view_axis,
)

__all__ = [
    "LAYER_AXIS_NAMES",
    "BlockRule",
    "Blocks",
    "Cut",
    "Heads",
    "LayerAxes",
    "Leaf",
    "LeafRule",
    "Parts",
    "RuleSet",
    "UnrecognisedLeavesError",
    "as_rule",
    "block_shape",
    "by_layout",
    "describe",
    "expand_blocks",
    "has_variables",
    "is_axes",
    "is_spec",
    "is_variable",
    "leaves",
    "memoized_resolver",
    "num_blocks",
    "path_names",
    "per_element",
    "per_tensor",
    "pieces",
    "recorded_layer_axes",
    "reduce_blocks",
    "remember_per_tree",
    "resolve",
    "resolve_entries",
    "resolve_tree",
    "transformer_rule",
    "transformer_rules",
    "view_axis",
]
