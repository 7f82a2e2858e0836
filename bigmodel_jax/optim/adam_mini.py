"""Adam-mini: Adam with one second moment per Hessian block.

Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025),
https://arxiv.org/abs/2406.16793; update rule of the authors' code v1.1.1 (torch AdamW
conventions). For block b at step t:

    v_b <- b2 v_b + (1 - b2) mean_{i in b} g_i^2          (one scalar per block)
    m   <- b1 m + (1 - b1) g                               (per element)
    u   <- (m / (1 - b1^t)) / (sqrt(v_b) / sqrt(1 - b2^t) + eps)

and `adam_mini` applies decoupled weight decay on the pre-update parameter and the learning
rate: p <- p - lr (u + wd p). The blocks come from `bigmodel_jax.blocks` (default: the paper's
blocks under every recognised family's naming, `blocks.transformer_rule()`; leaves no rule
recognises get a documented default and one warning at `init`, or an error with `strict=True`):
`v` is stored at each leaf's reduced block shape (keepdims; flat for a leaf with several roles),
so the state is about half of AdamW's. Means are taken over the global logical array (jnp.mean
under jit), so sharding never changes the result. Any parameter pytree works: dicts, nnx.State
(as `nnx.Optimizer` passes it), Equinox modules, lists of layers; layers stacked on an axis are
read from nnx metadata or declared with `layer_axes`.

Per leaf the update is one reduction (mean of g^2 over the block axes) and one elementwise pass
that XLA fuses: the per-block factor 1 / ((1 - b1^t)(sqrt(v)/sqrt(1 - b2^t) + eps)) is computed
at the reduced shape and broadcast, so the elementwise pass has no sqrt and no division.

`optax.inject_hyperparams(adam_mini)` works as is (rule sets are not callables); pass
`static_args=("partition", "weight_decay_mask")` only when those are your own callables (it would
take them for schedules), and `hyperparam_dtype=jnp.float32` for bf16 parameters.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import blocks
from bigmodel_jax.optim.weight_decay import decay_mask_for

_DEFAULT_PARTITION = blocks.transformer_rule()


class AdamMiniState(NamedTuple):
  """State of `scale_by_adam_mini`.

  Attributes:
    count: int32 scalar, number of updates taken.
    mu: first moment, per element (parameter shapes, `mu_dtype` or the parameter dtype).
    nu: second moment, one entry per block, at the reduced block shape (float32 or wider).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def _stat_dtype(dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


def _stat_sharding(param, spec: blocks.Blocks | blocks.Parts | None) -> NamedSharding | None:
  """For a concrete sharded parameter: its sharding with the block axes replicated.

  This is the sharding the jitted update gives `v` (a reduction over a sharded axis is
  replicated along it), so eager `init` and `update` agree and the state's shardings never
  change. Traced parameters (init under jit) and reshaped views get None (compiler's choice).
  """
  sharding = getattr(param, "sharding", None) if not isinstance(param, jax.core.Tracer) else None
  if not isinstance(sharding, NamedSharding):
    return None
  if spec is None:
    return NamedSharding(sharding.mesh, PartitionSpec())
  if not isinstance(spec, blocks.Blocks) or spec.view is not None:
    return None
  entries = list(sharding.spec) + [None] * (param.ndim - len(sharding.spec))
  return NamedSharding(sharding.mesh, PartitionSpec(
      *(None if axis in spec.axes else entry for axis, entry in enumerate(entries))))


def scale_by_adam_mini(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    partition: Any = None,
    mu_dtype: Any = None,
    layer_axes: blocks.LayerAxes = None,
    strict: bool = False,
) -> optax.GradientTransformation:
  """Rescales updates by Adam-mini's bias-corrected moments (no learning rate, no decay).

  Args:
    b1: decay of the first moment.
    b2: decay of the per-block second moment.
    eps: added to sqrt(v) / sqrt(1 - b2^t) (torch AdamW convention).
    partition: what `blocks.resolve` accepts: a `blocks.RuleSet` (e.g.
      `blocks.transformer_rule(head_dim=64)` for fused q/k kernels), a list of `blocks.BlockRule`,
      `blocks.per_tensor` / `blocks.per_element` (plain Adam), a callable `(path, leaf) -> axes`,
      or a pytree of axes / `blocks.Blocks`; None for `blocks.transformer_rule()`.
    mu_dtype: dtype of the first moment; None keeps each parameter's dtype.
    layer_axes: stacked layers: {subtree path: axis} (e.g. {"layers": 0}, MaxText's
      {"decoder/layers": 1}) or a callable; None reads them from nnx metadata where present.
    strict: raise instead of warning when a leaf matches no rule.

  Returns:
    An optax GradientTransformation with state `AdamMiniState`.
  """
  mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

  # init's blocks are reused by update (nnx.Optimizer passes update plain arrays, init Variables).
  specs_of = blocks.memoized_resolver(partition, layer_axes=layer_axes, default=_DEFAULT_PARTITION,
                                      strict=strict, who="adam_mini")

  def init_fn(params):
    specs = specs_of(params, refresh=True)
    leaves, treedef = jax.tree.flatten(params)
    mu = [jnp.zeros_like(p, dtype=mu_dtype or p.dtype) for p in leaves]
    nu = [jnp.zeros(s.stat_shape(p.shape), _stat_dtype(p.dtype), device=_stat_sharding(p, s))
          for p, s in zip(leaves, specs)]
    count = jnp.zeros([], jnp.int32, device=_stat_sharding(leaves[0], None) if leaves else None)
    return AdamMiniState(count=count, mu=treedef.unflatten(mu), nu=treedef.unflatten(nu))

  def update_fn(updates, state, params=None):
    del params
    specs = specs_of(updates)
    grads, treedef = jax.tree.flatten(updates)
    mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bc1 = 1 - jnp.asarray(b1, jnp.float32) ** t
    sqrt_bc2 = jnp.sqrt(1 - jnp.asarray(b2, jnp.float32) ** t)

    def leaf(g, m, v, spec):
      dtype = _stat_dtype(g.dtype)
      g32 = g.astype(dtype)
      m_new = b1 * m.astype(dtype) + (1 - b1) * g32
      v_new = b2 * v + (1 - b2) * blocks.reduce_blocks(g32 * g32, spec)
      factor = 1 / (bc1 * (jnp.sqrt(v_new) / sqrt_bc2 + eps))  # at the block shape
      update = m_new * blocks.expand_blocks(factor, spec, g.shape)
      return update.astype(g.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

    out = [leaf(g, m, v, s) for g, m, v, s in zip(grads, mus, nus, specs)]
    new_updates, new_mu, new_nu = ([o[i] for o in out] for i in range(3))
    return treedef.unflatten(new_updates), AdamMiniState(
        count=count, mu=treedef.unflatten(new_mu), nu=treedef.unflatten(new_nu))

  return optax.GradientTransformation(init_fn, update_fn)


def adam_mini(
    learning_rate: optax.ScalarOrSchedule,
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
  """Adam-mini with decoupled weight decay (Zhang et al., ICLR 2025).

  p <- p - lr * (u + weight_decay * p), u the update of `scale_by_adam_mini`; the decay acts on
  the pre-update parameter, as in torch AdamW and `optax.adamw`.

  Args:
    learning_rate: a float or an optax schedule.
    b1: decay of the first moment.
    b2: decay of the per-block second moment.
    eps: added to sqrt(v) / sqrt(1 - b2^t).
    weight_decay: decoupled weight-decay rate.
    weight_decay_mask: pytree of bools or callable params -> pytree of bools selecting the
      decayed leaves; None: matrices and embeddings by per-layer rank (`decay_mask`).
    partition: the block partition (see `scale_by_adam_mini`); None: the Transformer rules.
    mu_dtype: dtype of the first moment; None keeps each parameter's dtype.
    layer_axes: stacked layers (see `scale_by_adam_mini`).
    strict: raise instead of warning when a leaf matches no rule.

  Returns:
    An optax GradientTransformation (a chain: Adam-mini scaling, decay, learning rate).
  """
  return optax.chain(
      scale_by_adam_mini(b1=b1, b2=b2, eps=eps, partition=partition, mu_dtype=mu_dtype,
                         layer_axes=layer_axes, strict=strict),
      optax.add_decayed_weights(weight_decay, decay_mask_for(weight_decay_mask, layer_axes)),
      optax.scale_by_learning_rate(learning_rate),
  )
