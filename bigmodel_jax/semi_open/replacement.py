"""Replacing a set of decoder layers by freshly initialised ones (the attacker's starting point).

This project's models stack their decoder blocks on a leading axis under `layers`
(`models.LAYER_AXES`), so closing / replacing the set I of blocks rewrites the slices i in I of
every stacked array: `where(mask[i], fresh, victim)`. Embeddings, positions, the final norm and
the LM head are never touched (Huang et al., arXiv 2410.11182: only decoder blocks are closed).
"""

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import LAYER_AXES, TransformerConfig, create_model

LAYERS_KEY = next(iter(LAYER_AXES))
REINIT_SCALES = ("architecture", "fan_in")


def layer_mask(num_layers: int, layers: Iterable[int]) -> jax.Array:
  """bool[num_layers], True at the given block indices.

  Args:
    num_layers: number of decoder blocks L.
    layers: indices in [0, L).

  Returns:
    The mask.
  """
  layers = sorted(set(int(i) for i in layers))
  if layers and not 0 <= layers[0] <= layers[-1] < num_layers:
    raise ValueError(f"layer indices {layers} must lie in [0, {num_layers})")
  return jnp.zeros((num_layers,), bool).at[jnp.asarray(layers, jnp.int32)].set(True)


def _broadcast(mask: jax.Array, leaf: jax.Array) -> jax.Array:
  return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def replace_layers(params: dict, fresh: dict, mask: jax.Array) -> dict:
  """`params` with the blocks where `mask` is True taken from `fresh`.

  Args:
    params: the victim's parameters (pure dict, stacked blocks under `layers`).
    fresh: parameters of the same architecture (e.g. `fresh_params`).
    mask: bool[L] from `layer_mask` (may be traced: one compilation serves every set).

  Returns:
    A new pure dict; every leaf outside `layers` is the victim's own array.
  """
  layers = jax.tree.map(lambda p, f: jnp.where(_broadcast(mask, p), f, p),
                        params[LAYERS_KEY], fresh[LAYERS_KEY])
  return {**params, LAYERS_KEY: layers}


def _fan_in(path: tuple, leaf: jax.Array) -> int:
  """Input width of a stacked kernel [L, ...]: every axis but the output axes."""
  names = [getattr(k, "key", str(k)) for k in path]
  if "out" in names:  # attention output [L, heads, head_dim, embed]
    return int(leaf.shape[1] * leaf.shape[2])
  return int(leaf.shape[1])  # query/key/value [L, embed, heads, head_dim]; Linear [L, in, out]


def _fan_in_layers(layers: dict, seed: int) -> dict:
  """Kernels redrawn from N(0, 1 / fan_in); norms and biases kept."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(layers)
  keys = jax.random.split(jax.random.key(seed), len(flat))
  leaves = []
  for key, (path, leaf) in zip(keys, flat):
    is_kernel = getattr(path[-1], "key", None) == "kernel"
    leaves.append(jax.random.normal(key, leaf.shape, leaf.dtype) / jnp.sqrt(_fan_in(path, leaf))
                  if is_kernel else leaf)
  return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.cache
def _init_function(model_config: TransformerConfig, reinit_scale: str):
  """A jitted seed -> fresh parameters (compiled once per architecture and scale)."""

  def init(seed):
    model = create_model(model_config, nnx.Rngs(jax.random.key(seed)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if reinit_scale == "fan_in":
      params[LAYERS_KEY] = _fan_in_layers(params[LAYERS_KEY], seed)
    return params

  return jax.jit(init)


def fresh_params(model_config: TransformerConfig, seed: int,
                 reinit_scale: str = "architecture") -> dict:
  """A whole fresh model's parameters, from the architecture's own initialisers.

  Args:
    model_config: the victim's architecture.
    seed: `nnx.Rngs(seed)` of the draw.
    reinit_scale: "architecture" (the model's initialisers: normal(0.02), residual projections
      scaled by 1/sqrt(2L), norms 1, biases 0) or "fan_in" (block kernels redrawn from
      N(0, 1/d_in), a random block of gain ~1 as in a large LLM; spec A.7.0).

  Returns:
    A pure dict of the victim's structure.
  """
  if reinit_scale not in REINIT_SCALES:
    raise ValueError(f"reinit_scale ({reinit_scale!r}) must be one of {REINIT_SCALES}")
  return _init_function(model_config, reinit_scale)(jnp.uint32(seed))
