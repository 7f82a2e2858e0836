"""MoFO: Adam that updates, in every block, only the entries with the largest momentum.

Chen et al., "MoFO: Momentum-Filtered Optimizer for Mitigating Forgetting in LLM Fine-Tuning"
(2024), https://arxiv.org/abs/2407.20999; update rule of the authors' code. At step t, for every
block (default: one per parameter tensor, one per layer for stacked leaves):

    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2       (dense: every entry, every step)
    k = max(1, floor(numel(block) * fraction))
    thr = k-th largest |m| in the block
    u = where(|m| >= thr, m / (1 - b1^t), 0) / (sqrt(v / (1 - b2^t)) + eps)

and `mofo` applies decoupled weight decay to *all* entries of the decayed leaves (not only the
selected ones) and the learning rate: p <- p - lr (u + wd p), as `optax.adamw`.

Ties: the mask is `|m| >= thr`, the authors' rule, so an entry tied with the k-th largest |m|
is selected too and more than k entries may be selected (only when the k-th and (k+1)-th
largest |m| of a block are equal, e.g. when fewer than k entries have a nonzero momentum:
then thr = 0 and every entry is selected, the zero-momentum ones taking a zero step). The
ranking is on |m|, not on the Adam step m / sqrt(v). The mask is recomputed every step and is
not stored. With fraction = 1 the update is `optax.adamw`'s, bit for bit (the same formulas).

Blocks come from `bigmodel_jax.blocks.resolve`: by default (`default_partition`) every leaf
whose per-layer tensor is a matrix or more (kernels, embeddings) is one block per (per-layer)
tensor, and biases and norm parameters (per-layer rank <= 1) are blocks of one entry, i.e. take
the dense Adam step. Any parameter pytree works (dicts, nnx.State, Equinox modules); a list of
layers is a list of tensors, and layers stacked on an axis (nnx metadata, or `layer_axes`) are
ranked layer by layer. Finer partitions (e.g. `blocks.transformer_rule()`, the
Adam-mini blocks) are selected with `partition=`. The k-th largest |m| is found per block by an
exact radix select (`topk_threshold.kth_largest_magnitude`; on CPU a native XLA FFI kernel,
`native_select`), on the global logical array: a block sharded over devices is ranked as a
whole, never per shard.

`optax.inject_hyperparams(mofo)` works as is; pass `static_args=("partition",
"weight_decay_mask")` only for your own callables. An injected `fraction` is traced and k is then
computed in float32.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigmodel_jax import blocks
from bigmodel_jax.optim import topk_threshold
from bigmodel_jax.optim.weight_decay import decay_mask_for


class MoFOState(NamedTuple):
  """State of `scale_by_mofo` (the same moments as Adam's; the mask is not stored).

  Attributes:
    count: int32 scalar, number of updates taken.
    mu: first moment, per element (parameter shapes, `mu_dtype` or the parameter dtype).
    nu: second moment, per element (parameter shapes and dtypes).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


# MoFO's default blocks: one per (per-layer) tensor; a leaf whose tensor (one layer's, for
# stacked leaves) has rank <= 1 (biases, norm scales and biases) takes the dense Adam step, as in
# the authors' code.
default_partition = blocks.LeafRule(
    "mofo default: per tensor (rank >= 2), per element (rank <= 1)",
    lambda leaf: tuple(range(-leaf.rank, 0)) if leaf.rank >= 2 else ())


def _check_fraction(fraction) -> None:
  concrete = fraction if not isinstance(fraction, jax.core.Tracer) else None
  if concrete is not None and np.ndim(concrete) == 0 and not 0 < float(concrete) <= 1:
    raise ValueError(f"MoFO fraction must be in (0, 1], got {fraction}")


def momentum_mask(mu: jax.Array, spec: blocks.Blocks | blocks.Parts,
                  fraction) -> jax.Array | None:
  """The entries of one leaf that MoFO updates: |mu| >= the k-th largest |mu| of their block.

  Args:
    mu: the (new) first moment of one leaf.
    spec: its `blocks.Blocks` (or `blocks.Parts`: each part masked by its own blocks).
    fraction: the fraction of each block to select (k = max(1, floor(numel * fraction))).

  Returns:
    A bool array of `mu`'s shape, or None when every entry is selected (blocks of one entry, or
    a Python fraction of 1: k = numel selects the whole block).
  """
  if isinstance(fraction, int | float | np.floating) and fraction >= 1:
    return None
  if isinstance(spec, blocks.Parts):
    masks = [momentum_mask(piece, b, fraction) for piece, b in blocks.pieces(mu, spec)]
    return jnp.concatenate([jnp.ones(piece.shape, bool) if m is None else m
                            for m, (piece, _) in zip(masks, blocks.pieces(mu, spec))], spec.axis)
  if not spec.axes:
    return None
  blocked = mu.reshape(spec.shape(mu.shape))
  _, size = topk_threshold.block_count(blocked.shape, spec.axes)
  k = topk_threshold.block_k(size, fraction)
  threshold = topk_threshold.kth_largest_magnitude(blocked, k, spec.axes)
  return (jnp.abs(blocked) >= threshold).reshape(mu.shape)


def scale_by_mofo(
    fraction: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    partition: Any = None,
    mu_dtype: Any = None,
    layer_axes: blocks.LayerAxes = None,
    strict: bool = False,
) -> optax.GradientTransformation:
  """Rescales updates by Adam's moments, keeping the top `fraction` of |m| in every block.

  Args:
    fraction: fraction of every block's entries updated per step, in (0, 1]; at least one
      entry per block (k = max(1, floor(numel * fraction))). The authors use 0.05-0.20.
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: added to sqrt(v / (1 - b2^t)) (optax.adam convention).
    partition: what `bigmodel_jax.blocks.resolve` accepts (a `blocks.RuleSet` such as the
      Adam-mini blocks `blocks.transformer_rule()`, a list of `blocks.BlockRule`, a callable
      `(path, leaf) -> axes`, a pytree of axes); None: `default_partition` (one block per
      per-layer tensor, biases and norms dense).
    mu_dtype: dtype of the first moment; None keeps each parameter's dtype.
    layer_axes: stacked layers: {subtree path: axis} or a callable; None reads nnx metadata.
    strict: raise instead of warning when a leaf matches no rule of `partition`.

  Returns:
    An optax GradientTransformation with state `MoFOState`.
  """
  _check_fraction(fraction)
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  # init's blocks are reused by update (nnx.Optimizer passes update plain arrays, init Variables).
  specs_of = blocks.memoized_resolver(partition, layer_axes=layer_axes, default=default_partition,
                                      strict=strict, who="mofo")

  def init_fn(params):
    specs_of(params, refresh=True)  # errors and the unrecognised-leaves warning at init
    return MoFOState(count=jnp.zeros([], jnp.int32),
                     mu=optax.tree.zeros_like(params, dtype=mu_dtype),
                     nu=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    specs = specs_of(updates)
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)

    def leaf(m, m_hat, v_hat, spec):
      mask = momentum_mask(m, spec, fraction)
      m_hat = m_hat if mask is None else jnp.where(mask, m_hat, jnp.zeros_like(m_hat))
      return m_hat / (jnp.sqrt(v_hat) + eps)

    treedef = jax.tree.structure(updates)
    new_updates = treedef.unflatten([
        leaf(*xs) for xs in zip(*(treedef.flatten_up_to(t) for t in (mu, mu_hat, nu_hat)), specs)])
    return new_updates, MoFOState(count=count, mu=optax.tree.cast(mu, mu_dtype),
                                  nu=optax.tree.cast_like(nu, state.nu))

  return optax.GradientTransformation(init_fn, update_fn)


def mofo(
    learning_rate: optax.ScalarOrSchedule,
    fraction: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    partition: Any = None,
    mu_dtype: Any = None,
    layer_axes: blocks.LayerAxes = None,
    strict: bool = False,
) -> optax.GradientTransformation:
  """MoFO with decoupled weight decay (Chen et al., 2024).

  p <- p - lr * (u + weight_decay * p), u the momentum-filtered Adam step of `scale_by_mofo`;
  the decay acts on every entry of the decayed leaves, selected or not. With fraction = 1 this
  is `optax.adamw` (same chain: scaling, decay, learning rate).

  Args:
    learning_rate: a float or an optax schedule.
    fraction: fraction of every block's entries updated per step (see `scale_by_mofo`).
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: added to sqrt(v / (1 - b2^t)).
    weight_decay: decoupled weight-decay rate.
    weight_decay_mask: pytree of bools or callable params -> pytree of bools selecting the
      decayed leaves; None: matrices and embeddings by per-layer rank (`decay_mask`).
    partition: the block partition (see `scale_by_mofo`); None: `default_partition`.
    mu_dtype: dtype of the first moment; None keeps each parameter's dtype.
    layer_axes: stacked layers (see `scale_by_mofo`).
    strict: raise instead of warning when a leaf matches no rule of `partition`.

  Returns:
    An optax GradientTransformation (a chain: MoFO scaling, decay, learning rate).
  """
  return optax.chain(
      scale_by_mofo(fraction=fraction, b1=b1, b2=b2, eps=eps, partition=partition,
                    mu_dtype=mu_dtype, layer_axes=layer_axes, strict=strict),
      optax.add_decayed_weights(weight_decay, decay_mask_for(weight_decay_mask, layer_axes)),
      optax.scale_by_learning_rate(learning_rate),
  )
