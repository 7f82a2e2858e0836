"""LOMO and AdaLomo as optax transformations (the unfused reference of the fused step).

LOMO: Lv et al., "Full Parameter Fine-tuning for Large Language Models with Limited Resources"
(2023), https://arxiv.org/abs/2306.09782. Plain SGD, p <- p - lr g, fused into the backward pass.
AdaLomo: Lv et al., "AdaLomo: Low-memory Optimization with Adaptive Learning Rate" (2023),
https://arxiv.org/abs/2310.10195. Per tensor at step t (count from 1), with g2 = g^2 + eps:

    beta2_t = 1 - t^-decay_rate
    >=2-D:  r <- beta2_t r + (1 - beta2_t) mean_last(g2);  c <- ... mean_second_to_last(g2)
            u = g / sqrt((r / mean(r))[..., None] * c[..., None, :])
    else:   v <- beta2_t v + (1 - beta2_t) g2;  u = g / sqrt(v)
    u <- u / max(1, RMS(u) / clip_threshold)                  (grouped update normalisation)
    p <- p - lr max(param_scale_eps, RMS(p)) (u + weight_decay p)

(no momentum; the factored moments live over the last two axes). The memory saving of both comes
from fusing the update into the backward pass, which an optax transform cannot do:
`bigmodel_jax.train.fused_step` does it for this project's models, calling these very transforms
one layer at a time. Used unfused, e.g. in an `optax.chain`, they are ordinary optimizers.

Stacked layers. "One tensor" is what a per-tensor statistic (RMS, factored moments) is taken over.
`layer_axes` says how many leading axes of a leaf index independent tensors: 0 (default) treats
every leaf as one tensor; `stacked_layers` gives 1 to this project's leaves under a `layers` path
component (layers stacked on axis 0), so the unfused update on the stacked tree equals the fused,
layer-by-layer one.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax import blocks
from bigmodel_jax.models.transformer import LAYERS_AXIS

LayerAxes = int | Callable[[Any, jax.Array], int] | Any


def stacked_layers(path, leaf) -> int:
  """`layer_axes` rule for this project's models (`models.LAYER_AXES`: layers on axis 0)."""
  del leaf
  return int(LAYERS_AXIS in blocks.path_names(path))


def _resolve_layer_axes(layer_axes: LayerAxes, tree) -> list[int]:
  """The number of leading layer axes of every leaf of `tree`, in leaf order."""
  if isinstance(layer_axes, int):
    return [layer_axes] * len(jax.tree.leaves(tree))
  if callable(layer_axes):
    return [int(layer_axes(path, leaf)) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]
  return [int(n) for n in jax.tree.structure(tree).flatten_up_to(layer_axes)]


def _tensor_axes(x: jax.Array, num_layer_axes: int) -> tuple[int, ...]:
  return tuple(range(num_layer_axes, x.ndim))


def _rms(x: jax.Array, num_layer_axes: int) -> jax.Array:
  """RMS per tensor (over all but the leading layer axes), keepdims."""
  return jnp.sqrt(jnp.mean(jnp.square(x), axis=_tensor_axes(x, num_layer_axes), keepdims=True))


class LomoState(NamedTuple):
  """State of `scale_by_lomo`: LOMO is stateless (plain SGD), so this holds nothing."""


def scale_by_lomo(clip_grad_value: float | None = None) -> optax.GradientTransformation:
  """LOMO's gradient processing: the identity, or element-wise clipping to +-clip_grad_value.

  (Global-norm clipping is `optax.clip_by_global_norm` before it; the fused step does it by
  LOMO's two-pass method.)

  Args:
    clip_grad_value: if set, clip every gradient entry to [-clip_grad_value, clip_grad_value].

  Returns:
    An optax GradientTransformation with state `LomoState`.
  """

  def init_fn(params):
    del params
    return LomoState()

  def update_fn(updates, state, params=None):
    del params
    if clip_grad_value is not None:
      updates = jax.tree.map(lambda g: jnp.clip(g, -clip_grad_value, clip_grad_value), updates)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def lomo(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    clip_grad_value: float | None = None,
) -> optax.GradientTransformation:
  """LOMO (Lv et al. 2023): p <- p - lr (g + weight_decay p).

  Args:
    learning_rate: a float or an optax schedule.
    weight_decay: decoupled weight decay (the original LOMO has none: 0).
    weight_decay_mask: pytree of bools or callable params -> such a pytree; None decays all.
    clip_grad_value: optional element-wise gradient clipping.

  Returns:
    An optax GradientTransformation.
  """
  return optax.chain(
      scale_by_lomo(clip_grad_value),
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate),
  )


class AdaLomoState(NamedTuple):
  """State of `scale_by_adalomo`; the three moment trees mirror the parameters.

  Attributes:
    count: int32 scalar, number of updates taken.
    v_row: per >=2-D leaf, the row moment (leaf shape without its last axis), float32;
      else a zeros placeholder of the leaf's layer shape.
    v_col: per >=2-D leaf, the column moment (leaf shape without its second-to-last axis).
    v: per leaf of fewer than 2 tensor axes, the full second moment; else a placeholder.
  """

  count: jax.Array
  v_row: optax.Updates
  v_col: optax.Updates
  v: optax.Updates


def _is_factored(x, num_layer_axes: int) -> bool:
  return x.ndim - num_layer_axes >= 2


def _init_moments(p, n: int):
  placeholder = jnp.zeros(p.shape[:n], jnp.float32)
  if _is_factored(p, n):
    return (jnp.zeros(p.shape[:-1], jnp.float32), jnp.zeros(p.shape[:-2] + p.shape[-1:],
                                                             jnp.float32), placeholder)
  return placeholder, placeholder, jnp.zeros(p.shape, jnp.float32)


def _adalomo_leaf(g, v_row, v_col, v, n, beta2, eps, clip_threshold):
  """One tensor's (or one stack of tensors') normalised update and new moments."""
  g32 = g.astype(jnp.float32)
  g2 = jnp.square(g32) + eps
  if _is_factored(g, n):
    v_row = beta2 * v_row + (1 - beta2) * jnp.mean(g2, axis=-1)
    v_col = beta2 * v_col + (1 - beta2) * jnp.mean(g2, axis=-2)
    row = v_row / jnp.mean(v_row, axis=-1, keepdims=True)
    u = g32 * jax.lax.rsqrt(row)[..., None] * jax.lax.rsqrt(v_col)[..., None, :]
  else:
    v = beta2 * v + (1 - beta2) * g2
    u = g32 * jax.lax.rsqrt(v)
  u = u / jnp.maximum(1.0, _rms(u, n) / clip_threshold)
  return u.astype(g.dtype), v_row, v_col, v


def scale_by_adalomo(
    decay_rate: float = 0.8,
    eps: float = 1e-30,
    clip_threshold: float = 1.0,
    layer_axes: LayerAxes = 0,
) -> optax.GradientTransformation:
  """AdaLomo's update direction: factored second moment, no momentum, RMS-clipped per tensor.

  Args:
    decay_rate: beta2_t = 1 - t^-decay_rate (the paper's 0.8).
    eps: added to g^2 before it enters the moments (the paper's 1e-30).
    clip_threshold: the update of each tensor is rescaled to RMS <= clip_threshold.
    layer_axes: leading axes that index independent tensors: an int, a pytree of ints, or a
      callable (path, leaf) -> int such as `stacked_layers`.

  Returns:
    An optax GradientTransformation with state `AdaLomoState`.
  """

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    moments = [_init_moments(p, n) for p, n in zip(leaves, _resolve_layer_axes(layer_axes,
                                                                                 params))]
    v_row, v_col, v = ([treedef.unflatten(list(m)) for m in zip(*moments)]
                       if moments else (treedef.unflatten([]),) * 3)
    return AdaLomoState(jnp.zeros([], jnp.int32), v_row, v_col, v)

  def update_fn(updates, state, params=None):
    del params
    grads, treedef = jax.tree.flatten(updates)
    count = optax.safe_increment(state.count)
    beta2 = 1.0 - count.astype(jnp.float32) ** -decay_rate
    out = [_adalomo_leaf(g, r, c, v, n, beta2, eps, clip_threshold) for g, r, c, v, n in zip(
        grads, treedef.flatten_up_to(state.v_row), treedef.flatten_up_to(state.v_col),
        treedef.flatten_up_to(state.v), _resolve_layer_axes(layer_axes, updates))]
    new = [treedef.unflatten([o[i] for o in out]) for i in range(4)]
    return new[0], AdaLomoState(count, *new[1:])

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_param_rms(eps: float = 1e-3, layer_axes: LayerAxes = 0
                       ) -> optax.GradientTransformation:
  """Multiplies each tensor's update by max(eps, RMS(p)) (AdaLomo's relative step size).

  Args:
    eps: the floor of the parameter scale (the paper's 1e-3).
    layer_axes: as in `scale_by_adalomo`.

  Returns:
    A stateless optax GradientTransformation (needs `params`).
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_param_rms needs params; pass them to update()")
    leaves, treedef = jax.tree.flatten(updates)
    scaled = [
        (u * jnp.maximum(eps, _rms(p.astype(jnp.float32), n))).astype(u.dtype)
        for u, p, n in zip(leaves, treedef.flatten_up_to(params),
                           _resolve_layer_axes(layer_axes, updates))]
    return treedef.unflatten(scaled), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def adalomo(
    learning_rate: optax.ScalarOrSchedule,
    decay_rate: float = 0.8,
    eps: float = 1e-30,
    clip_threshold: float = 1.0,
    param_scale_eps: float = 1e-3,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    layer_axes: LayerAxes = 0,
) -> optax.GradientTransformation:
  """AdaLomo (Lv et al. 2023): p <- p - lr max(param_scale_eps, RMS(p)) (u + weight_decay p).

  Args:
    learning_rate: a float or an optax schedule.
    decay_rate: beta2_t = 1 - t^-decay_rate.
    eps: added to g^2 in the moments.
    clip_threshold: per-tensor RMS bound of the normalised update u.
    param_scale_eps: floor of the relative step size max(eps, RMS(p)).
    weight_decay: weight decay, scaled like the update (as in the authors' code).
    weight_decay_mask: pytree of bools or callable params -> such a pytree; None decays all.
    layer_axes: leading axes that index independent tensors (see the module docstring).

  Returns:
    An optax GradientTransformation.
  """
  return optax.chain(
      scale_by_adalomo(decay_rate, eps, clip_threshold, layer_axes),
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_param_rms(param_scale_eps, layer_axes),
      optax.scale_by_learning_rate(learning_rate),
  )
