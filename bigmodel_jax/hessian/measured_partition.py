"""An Adam-mini partition measured from the Hessian, for models that no partition rule knows.

Adam-mini (Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More", ICLR 2025) gives one
second moment to each *dense sub-block* of the Hessian; its rules (per head for query and key, per
output neuron for value, attention output and MLP, per token for embeddings) were read off the
near-block-diagonal Hessian of small Transformers (Zhang et al., "Why Transformers Need Adam: A
Hessian Perspective", NeurIPS 2024). `propose_partition` applies that principle to any model by
measuring instead of naming:

For every leaf, and for every layer of a leaf that stacks layers, H_WW (the Hessian restricted to
the leaf; `leaf_hvp`) is probed with a few Gaussian vectors v, each supported on one randomly
chosen block b of a candidate cut. The *leakage* of the candidate is the fraction of |H v|^2 that
falls outside the probed block (inside the same layer), averaged over the probes and layers:

    leakage = mean_probes |(H v)_outside b|^2 / |H v|^2.

Since E|(H v)_outside|^2 = ||H_{not b, b}||_F^2, this estimates the share of a block's Hessian
columns that lies outside the block (a mean of ratios, so that no single high-curvature block
dominates): 0 for an exactly block-diagonal H_WW (the candidate or any coarser cut), large when
the cut splits a dense block. Candidates, finest first: one block per element; one block per
index of a set of axes (per output neuron of a (in, out) kernel, per output channel of a (kh, kw,
cin, cout) conv kernel, per head of a (D, H, Dh) kernel, ...); one block per contiguous group
along one axis (fused heads; group sizes from `head_sizes` or every proper divisor of the axis
length); the whole (per-layer) tensor, whose leakage is 0 by definition. The proposal is the
finest candidate whose leakage is at most `tolerance` (ties in the number of blocks: the lower
leakage). A second statistic, the energy of the largest single other block relative to the probed
one (`max_block_ratio`, median over probes), is reported and can be selected with `criterion`;
`reselect` re-makes the choices of a report at another tolerance with no new HVP.

Leaves of rank 1 (biases, norm scales: their shapes do not tell them apart) are probed too: per
element (a diagonal H_WW) against the whole tensor. Rank-0 leaves get one block (per element).
A stacked leaf is probed one layer slice at a time and its proposal never reduces the layer axis.

Cost: num_candidates * num_probes * num_layers HVPs per leaf, `probe_batch` at a time, from one
compiled `leaf_hvp` per leaf (default), or from one compiled whole-model `hvp` shared by all
leaves (`compile_per_leaf=False`: much faster for small models, whose compilation dominates).
"""

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax import blocks
from bigmodel_jax.hessian.hvp import hvp, leaf_hvp

CRITERIA = ("leakage", "max_block_ratio")


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One way of cutting one layer's tensor into blocks.

  Attributes:
    name: e.g. "per element", "per index of axis 1", "per group of 16 along axis 1", "whole
      tensor".
    view: the per-layer shape the tensor is viewed at (splits one axis for groups).
    index_axes: the view axes that index blocks (the others are reduced: one block spans them).
  """

  name: str
  view: tuple[int, ...]
  index_axes: tuple[int, ...]

  @property
  def num_blocks(self) -> int:
    """Blocks per layer."""
    return int(np.prod([self.view[a] for a in self.index_axes], dtype=np.int64))

  @property
  def reduce_axes(self) -> tuple[int, ...]:
    """The view axes one block spans."""
    return tuple(a for a in range(len(self.view)) if a not in self.index_axes)


def _axes_name(index_axes: tuple[int, ...], num_informative: int) -> str:
  if not index_axes:
    return "whole tensor"
  if len(index_axes) == num_informative:
    return "per element"
  if len(index_axes) == 1:
    return f"per index of axis {index_axes[0]}"
  return f"per index of axes {index_axes}"


def _group_sizes(length: int, head_sizes: Sequence[int] | None) -> list[int]:
  sizes = range(2, length) if head_sizes is None else head_sizes
  return sorted({int(g) for g in sizes if 1 < g < length and length % g == 0})


def candidates(shape: Sequence[int], head_sizes: Sequence[int] | None = None) -> list[Candidate]:
  """The candidate cuts of one layer's tensor of `shape`, finest first.

  Args:
    shape: the per-layer shape (the layer axis removed).
    head_sizes: group sizes tried along every axis they divide (e.g. the head size, for fused
      heads); None tries every proper divisor of every axis length.

  Returns:
    Per element, per index of every proper non-empty subset of the axes longer than 1, per
    contiguous group along every axis, the whole tensor; each distinct cut once, sorted by
    number of blocks (descending), then by name.
  """
  shape = tuple(int(d) for d in shape)
  informative = [a for a, d in enumerate(shape) if d > 1]  # a length-1 axis cuts nothing
  out = [Candidate(_axes_name(kept, len(informative)), shape, kept)
         for k in range(len(informative) + 1)
         for kept in itertools.combinations(informative, k)]
  for axis, length in enumerate(shape):
    for size in _group_sizes(length, head_sizes):
      view = (*shape[:axis], length // size, size, *shape[axis + 1:])
      out.append(Candidate(f"per group of {size} along axis {axis}", view, (axis,)))
  return sorted(out, key=lambda c: (-c.num_blocks, c.name))


def to_blocks(candidate: Candidate, layer_shape: Sequence[int], layer_axis: int | None,
              num_layers: int = 1) -> blocks.Blocks:
  """The `blocks.Blocks` of the whole leaf for a per-layer candidate (layer axis never reduced).

  Args:
    candidate: the per-layer cut.
    layer_shape: the per-layer shape.
    layer_axis: the leaf's stacked-layer axis, or None.
    num_layers: the length of the layer axis.

  Returns:
    The Blocks over the leaf (over its view when the candidate splits an axis).
  """
  view = tuple(candidate.view)
  cut = blocks.Blocks(candidate.reduce_axes, None if view == tuple(layer_shape) else view)
  return cut if layer_axis is None else cut.with_layer_axis(layer_shape, layer_axis, num_layers)


def _full_shape(layer_shape, layer_axis, num_layers) -> tuple[int, ...]:
  shape = tuple(layer_shape)
  return shape if layer_axis is None else (*shape[:layer_axis], num_layers, *shape[layer_axis:])


# ----------------------------------------------------------------------------- probes


def _probe(candidate: Candidate, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
  """A Gaussian vector on one random block of `candidate` (view-shaped) and the block index."""
  index = tuple(int(rng.integers(candidate.view[a])) for a in candidate.index_axes)
  where = [slice(None)] * len(candidate.view)
  for axis, i in zip(candidate.index_axes, index):
    where[axis] = slice(i, i + 1)
  vector = np.zeros(candidate.view, np.float32)
  block = vector[tuple(where)]
  vector[tuple(where)] = rng.standard_normal(block.shape)
  return vector, index


def _embed(vector: np.ndarray, layer_shape, layer_axis, num_layers, layer) -> np.ndarray:
  vector = vector.reshape(layer_shape)
  if layer_axis is None:
    return vector
  full = np.zeros(_full_shape(layer_shape, layer_axis, num_layers), np.float32)
  full[(slice(None),) * layer_axis + (layer,)] = vector
  return full


def _layer_slice(array: np.ndarray, layer_axis, layer) -> np.ndarray:
  return array if layer_axis is None else np.take(array, layer, axis=layer_axis)


def _leaf_products(loss_fn: Callable, params, leaf_index: int, probe_batch: int) -> Callable:
  """vectors [P, *leaf] -> H_WW vectors, from one `leaf_hvp` compiled for this leaf."""

  def apply(params, vectors):
    one = lambda v: leaf_hvp(loss_fn, params, leaf_index, v)
    return jax.lax.map(one, vectors, batch_size=probe_batch)

  compiled = jax.jit(apply)
  return lambda vectors: np.asarray(compiled(params, jnp.asarray(vectors)))


def _model_products(loss_fn: Callable, params, probe_batch: int) -> Callable:
  """(leaf_index, vectors [P, *leaf]) -> H_WW vectors, from one whole-model `hvp` (one compile).

  The probes are zero off the leaf, so the leaf's part of H v is exactly H_WW v. Chunks of
  `probe_batch` (the last one padded) keep one compiled shape.
  """
  compiled = jax.jit(lambda p, vs: jax.vmap(lambda v: hvp(loss_fn, p, v))(vs))
  leaves, treedef = jax.tree.flatten(params)

  def products(leaf_index: int, vectors: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(vectors), probe_batch):
      chunk = vectors[start:start + probe_batch]
      pad = np.zeros((probe_batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
      tree = [np.zeros((probe_batch, *np.shape(x)), x.dtype) for x in leaves]
      tree[leaf_index] = np.concatenate([chunk, pad]).astype(leaves[leaf_index].dtype)
      result = compiled(params, jax.tree.unflatten(treedef, tree))
      out.append(np.asarray(jax.tree.leaves(result)[leaf_index])[:len(chunk)])
    return np.concatenate(out)

  return products


def _energies(product: np.ndarray, candidate: Candidate, index: tuple
              ) -> tuple[float, float, float]:
  """(in-block, total, largest other block) energies of one layer's H v."""
  energy = product.astype(np.float64).reshape(candidate.view) ** 2
  per_block = energy.sum(axis=candidate.reduce_axes) if candidate.reduce_axes else energy
  per_block = np.asarray(per_block).reshape([candidate.view[a] for a in candidate.index_axes])
  inside = float(per_block[index]) if index else float(per_block)
  others = per_block.copy()
  if index:
    others[index] = 0.0
  else:
    others = np.zeros(1)
  return inside, float(energy.sum()), float(others.max(initial=0.0))


def _statistics(rows: list[tuple[float, float, float]]) -> dict:
  """Leakage: mean over probes of each probe's fraction; max_block_ratio: median over probes."""
  tiny = np.finfo(np.float64).tiny
  fractions = [max(total - inside, 0.0) / max(total, tiny) for inside, total, _ in rows]
  ratios = [largest / max(inside, tiny) for inside, _, largest in rows]
  return {"leakage": float(np.mean(fractions)), "max_block_ratio": float(np.median(ratios))}


# ----------------------------------------------------------------------------- selection


def choose(entries: Sequence[dict], tolerance: float, criterion: str = "leakage") -> dict:
  """The finest candidate whose statistic is at most `tolerance` (from a report's entries).

  Args:
    entries: a leaf report's "candidates": dicts with "num_blocks" and the statistics.
    tolerance: the largest accepted statistic.
    criterion: "leakage" or "max_block_ratio".

  Returns:
    The chosen entry: most blocks per layer, ties broken by the lower statistic; the whole
    tensor (statistic 0) always qualifies.
  """
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
  passing = [e for e in entries if e[criterion] <= tolerance or e["num_blocks"] == 1]
  return min(passing, key=lambda e: (-e["num_blocks"], e[criterion]))


def _measure_leaf(products: Callable, shape, layer_axis, cands, rng, num_probes
                  ) -> tuple[list, list]:
  """Probes every candidate in every layer.

  Returns:
    (rows, cross): rows[candidate][layer] lists the `_energies` of each probe; cross lists
    (energy of the whole leaf, energy in the probed layer) of each probe.
  """
  num_layers = 1 if layer_axis is None else shape[layer_axis]
  layer_shape = tuple(d for a, d in enumerate(shape) if a != layer_axis)
  plan, vectors = [], []
  for layer, (k, cand), _ in itertools.product(range(num_layers), enumerate(cands),
                                               range(num_probes)):
    vector, index = _probe(cand, rng)
    plan.append((layer, k, index))
    vectors.append(_embed(vector, layer_shape, layer_axis, num_layers, layer))
  rows = [[[] for _ in range(num_layers)] for _ in cands]
  cross = []
  for (layer, k, index), product in zip(plan, products(np.stack(vectors))):
    mine = _layer_slice(product, layer_axis, layer)
    rows[k][layer].append(_energies(mine, cands[k], index))
    cross.append((float(np.sum(product.astype(np.float64) ** 2)),
                  float(np.sum(mine.astype(np.float64) ** 2))))
  return rows, cross


def _leaf_report(rows, cross, cands, shape, layer_axis, tolerance, criterion) -> dict:
  entries = []
  for cand, per_layer in zip(cands, rows):
    entry = {"name": cand.name, "num_blocks": cand.num_blocks, "view": list(cand.view),
             "index_axes": list(cand.index_axes),
             **_statistics([r for layer in per_layer for r in layer])}
    if layer_axis is not None:
      entry["per_layer"] = [_statistics(layer) for layer in per_layer]
    entries.append(entry)
  total, own = (np.sum([c[i] for c in cross]) for i in range(2))
  entry = {"shape": list(shape), "layer_axis": layer_axis,
           "cross_layer_leakage": float((total - own) / max(total, np.finfo(float).tiny)),
           "candidates": entries}
  return {**entry, **_chosen_fields(entry, tolerance, criterion)}


def _chosen_fields(entry: dict, tolerance: float, criterion: str) -> dict:
  chosen = choose(entry["candidates"], tolerance, criterion)
  num_layers = 1 if entry["layer_axis"] is None else entry["shape"][entry["layer_axis"]]
  return {"chosen": chosen["name"], "num_blocks": chosen["num_blocks"] * num_layers,
          "blocks_per_layer": chosen["num_blocks"], "view": chosen["view"],
          "index_axes": chosen["index_axes"], criterion: chosen[criterion]}


def blocks_of(entry: dict) -> blocks.Blocks:
  """The `blocks.Blocks` of a leaf report entry (its "chosen" candidate)."""
  layer_axis = entry["layer_axis"]
  shape = entry["shape"]
  layer_shape = [d for a, d in enumerate(shape) if a != layer_axis]
  cand = Candidate(entry["chosen"], tuple(entry["view"]), tuple(entry["index_axes"]))
  num_layers = 1 if layer_axis is None else shape[layer_axis]
  return to_blocks(cand, layer_shape, layer_axis, num_layers)


def partition_of_report(report: dict) -> Callable[[tuple, Any], blocks.Blocks]:
  """The partition a report chose, as the callable (leaf path, leaf) -> Blocks that
  `adam_mini(partition=...)` takes (e.g. a report read back from its JSON file).

  Args:
    report: from `propose_partition` (or `reselect`), keyed by leaf path ("conv0/kernel").

  Returns:
    The partition; a leaf the report does not name raises a KeyError naming it.
  """

  def partition(path: tuple, leaf) -> blocks.Blocks:
    del leaf
    name = "/".join(path)
    if name not in report:
      raise KeyError(f"the partition report has no leaf {name!r} (it has {sorted(report)})")
    return blocks_of(report[name])

  return partition


def reselect(report: dict, tolerance: float, criterion: str = "leakage") -> dict:
  """A copy of `report` whose choices are re-made at another tolerance or criterion (no HVP).

  Args:
    report: from `propose_partition`.
    tolerance: the largest accepted statistic.
    criterion: "leakage" or "max_block_ratio".

  Returns:
    The report with "chosen", "num_blocks", "blocks_per_layer", "view", "index_axes" updated.
  """
  return {path: {**entry, **_chosen_fields(entry, tolerance, criterion)}
          if entry["candidates"] else entry for path, entry in report.items()}


# ----------------------------------------------------------------------------- entry point


def propose_partition(
    loss_fn: Callable,
    params,
    key: jax.Array,
    *,
    layer_axes: blocks.LayerAxes = None,
    num_probes: int = 4,
    tolerance: float = 0.3,
    head_sizes: Sequence[int] | None = None,
    criterion: str = "leakage",
    probe_batch: int = 16,
    compile_per_leaf: bool = True,
    callback: Callable[[str, dict], None] | None = None,
):
  """Proposes an Adam-mini partition from the Hessian's measured sub-block structure.

  The principle of Adam-mini (Zhang et al., ICLR 2025): one learning rate per dense sub-block of
  the near-block-diagonal Hessian (Zhang et al., NeurIPS 2024). See the module docstring for
  the probes, the candidates and the leakage.

  Args:
    loss_fn: loss_fn(params) -> scalar, closed over a small fixed batch (`hvp.mean_loss` builds
      one over several batches). Deterministic (no dropout).
    params: the parameter pytree.
    key: a jax PRNG key (block choice and probe vectors).
    layer_axes: stacked layers, as everywhere in `bigmodel_jax.blocks` ({subtree path: axis},
      e.g. {"layers": 0}, or a callable (path, leaf) -> axis; None: nnx metadata only); such a
      leaf is probed per layer slice and never reduced over that axis.
    num_probes: probe vectors per candidate and layer.
    tolerance: the largest accepted statistic (default: a leakage of 30%).
    head_sizes: group sizes for the contiguous-group candidates (e.g. the head size, for fused
      heads); None tries every proper divisor of every axis length.
    criterion: "leakage" (fraction of |Hv|^2 outside the block) or "max_block_ratio" (the
      largest single other block's energy over the probed block's).
    probe_batch: HVPs computed together (memory: that many forward/backward passes).
    compile_per_leaf: True: one compiled `leaf_hvp` per leaf (only that leaf is differentiated;
      probes are leaf-sized; for models whose HVP costs more than its compilation). False: one
      compiled whole-model `hvp` serves every leaf (the probe is zero off the leaf, so the
      leaf's part of H v is still H_WW v; memory of `probe_batch` parameter-sized vectors; for
      small models, where compiling dominates: ~4 s per leaf for a tiny GPT on 2 CPU cores).
    callback: called as callback(path string, leaf report) after each leaf (progress).

  Returns:
    (partition, report): `partition` has the structure of `params` with a `blocks.Blocks` per
    leaf (accepted as `adam_mini(partition=...)`); `report` maps each leaf's path string
    ("layers/mlp/up/kernel") to a dict: shape, layer_axis, chosen (candidate name), num_blocks
    (over all layers), blocks_per_layer, view, index_axes, cross_layer_leakage (share of |Hv|^2
    in other layers of a stacked leaf) and candidates (each: name, num_blocks per layer,
    leakage, max_block_ratio, and per_layer statistics for stacked leaves), finest first.
  """
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
  if num_probes < 1:
    raise ValueError(f"num_probes must be >= 1, got {num_probes}")
  rng = np.random.default_rng(int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max)))
  treedef = jax.tree.structure(params)
  model_products = None if compile_per_leaf else _model_products(loss_fn, params, probe_batch)
  specs, report = [], {}
  for leaf_index, leaf in enumerate(blocks.leaves(params, layer_axes)):
    name, axis, shape, layer_shape = leaf.name, leaf.layer_axis, leaf.shape, leaf.layer_shape
    if not layer_shape:
      report[name] = {"shape": list(shape), "layer_axis": axis, "chosen": "per element",
                      "num_blocks": int(np.prod(shape, dtype=np.int64)), "blocks_per_layer": 1,
                      "view": [], "index_axes": [], "candidates": []}
      specs.append(blocks.Blocks(()))
    else:
      cands = candidates(layer_shape, head_sizes)
      products = (_leaf_products(loss_fn, params, leaf_index, probe_batch) if compile_per_leaf
                  else functools.partial(model_products, leaf_index))
      rows, cross = _measure_leaf(products, shape, axis, cands, rng, num_probes)
      report[name] = _leaf_report(rows, cross, cands, shape, axis, tolerance, criterion)
      specs.append(blocks_of(report[name]))
    if callback is not None:
      callback(name, report[name])
  return jax.tree.unflatten(treedef, specs), report
