"""`describe`: the partition table of a parameter pytree, for people."""

from bigmodel_jax.blocks.families import transformer_rule
from bigmodel_jax.blocks.leaves import LayerAxes
from bigmodel_jax.blocks.partition import Partition, resolve_entries
from bigmodel_jax.blocks.spec import Parts


def _stat(spec, shape) -> str:
  if isinstance(spec, Parts):
    return " | ".join(str(p.stat_shape(s)) for p, s in zip(spec.parts, spec.part_shapes(shape)))
  return str(spec.stat_shape(shape))


def describe(params, partition: Partition = None, *, layer_axes: LayerAxes = None,
             file=None) -> str:
  """Prints (and returns) the partition table: leaf, shape, layer axis, blocks, rule.

  Args:
    params: the parameter pytree (arrays or ShapeDtypeStructs; any container).
    partition: any partition `blocks.resolve` accepts; None for `transformer_rule()`.
    layer_axes: the stacked-layer declaration (see `blocks.leaves`).
    file: where to print (default stdout); the table is returned either way.

  Returns:
    The table; leaves no rule recognised are marked "<- UNRECOGNISED" and counted at the end.
  """
  rows, flagged, total = [], 0, 0
  for leaf, spec, name, ok in resolve_entries(partition, params, layer_axes=layer_axes,
                                              default=transformer_rule()):
    count = spec.count(leaf.shape)
    total += count
    flagged += not ok
    layer = "-" if leaf.layer_axis is None else str(leaf.layer_axis)
    rows.append((leaf.name, str(leaf.shape), layer, str(count), _stat(spec, leaf.shape),
                 name + ("" if ok else "  <- UNRECOGNISED")))
  header = ("leaf", "shape", "layer axis", "blocks", "block stat shape", "rule")
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5]
  lines = [fmt(header), fmt((*("-" * w for w in widths), "-" * 4)), *map(fmt, rows),
           f"{len(rows)} leaves, {total} blocks, {flagged} unrecognised leaves"]
  table = "\n".join(lines)
  print(table, file=file)
  return table
