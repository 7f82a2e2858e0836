"""How a replaced or perturbed block changes the residual stream of the blocks above it.

Diagnostics of the transition-layer claim of Huang et al., arXiv 2410.11182 (§4, Fig. 4: small
perturbations of the first layers grow through the later ones); our operationalisation, spec
A.7.5. D1: rho_l = |Block_l(h_l) - h_l| / |h_l|, a block's residual contribution relative to its
input stream, for the trained and for a random block. D2: perturb every matrix of block l by
sigma * rms(W) * xi and follow |h'_k - h_k| / |h_k| up to the last block; the amplification is
A(l) = deviation after the last block / deviation right after block l.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.models.block import Block
from bigmodel_jax.semi_open.replacement import LAYERS_KEY, replace_layers


def block_graphdef(model_config: TransformerConfig) -> nnx.GraphDef:
  """The graph of one decoder block (merged with one slice of the stacked `layers`)."""
  with nnx.use_eager_sharding(False):
    return nnx.split(nnx.eval_shape(lambda: Block(model_config, rngs=nnx.Rngs(0))))[0]


def hidden_states(graphdef: nnx.GraphDef, block_def: nnx.GraphDef, params: dict,
                  tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The residual stream before block 0 and after every block, and the logits.

  Args:
    graphdef: the model's graph.
    block_def: `block_graphdef(config)`.
    params: the model's parameters (pure dict).
    tokens: int32[batch, length].

  Returns:
    (float32[L + 1, batch, length, embed] streams h_0..h_L, float32[batch, length, vocab]).
  """
  model = nnx.merge(graphdef, params)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
  x = model._embed_tokens(tokens, positions)

  def step(x, layer):
    x = nnx.merge(block_def, layer)(x, positions)
    return x, x

  x_last, stream = jax.lax.scan(step, x, params[LAYERS_KEY])
  logits = model._logits(model.final_norm(x_last))
  return jnp.concatenate([x[None], stream]).astype(jnp.float32), logits


def _relative(delta: jax.Array, base: jax.Array) -> jax.Array:
  """Mean over tokens of |delta| / |base| (norms over the embedding axis)."""
  return jnp.mean(jnp.linalg.norm(delta, axis=-1) / jnp.linalg.norm(base, axis=-1))


def residual_ratios(block_def: nnx.GraphDef, layers: dict, stream: jax.Array,
                    tokens: jax.Array) -> jax.Array:
  """D1: rho_l of every block of `layers` applied to the victim's input stream h_l.

  Args:
    block_def: `block_graphdef(config)`.
    layers: stacked block parameters (the victim's, or a fresh draw's).
    stream: the victim's h_0..h_L from `hidden_states`.
    tokens: int32[batch, length] (for the positions).

  Returns:
    float32[L].
  """
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)

  def ratio(layer, h):
    return _relative(nnx.merge(block_def, layer)(h, positions) - h, h)

  return jax.vmap(ratio)(layers, stream[:-1])


def perturb_block(params: dict, layer: jax.Array, sigma: float, key: jax.Array) -> dict:
  """Block `layer` with every matrix W replaced by W + sigma * rms(W) * xi, xi ~ N(0, I).

  Args:
    params: the model's parameters (pure dict).
    layer: int32 scalar, the perturbed block (may be traced).
    sigma: the relative noise scale.
    key: PRNG key of xi.

  Returns:
    The perturbed parameters (norm scales and biases, and every other block, unchanged).
  """
  flat, treedef = jax.tree_util.tree_flatten(params[LAYERS_KEY])
  keys = jax.random.split(key, len(flat))
  noisy = []
  for k, w in zip(keys, flat):
    if w.ndim >= 3:  # a stacked matrix [L, ...]
      rms = jnp.sqrt(jnp.mean(jnp.square(w), axis=tuple(range(1, w.ndim)), keepdims=True))
      w = w + sigma * rms * jax.random.normal(k, w.shape, w.dtype)
    noisy.append(w)
  noisy_params = {**params, LAYERS_KEY: jax.tree_util.tree_unflatten(treedef, noisy)}
  num_layers = flat[0].shape[0]
  return replace_layers(params, noisy_params, jnp.arange(num_layers) == layer)


def _mean_ce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))


def make_amplification(graphdef: nnx.GraphDef, block_def: nnx.GraphDef):
  """D2 as one jitted function of (params, layer, sigma, key, tokens, targets).

  Returns:
    fn -> (float32[L + 1] deviation |h'_k - h_k| / |h_k| for k = 0..L (0 below the perturbed
    block), float32 amplification A(l), float32 CE(perturbed) - CE(victim)).
  """

  @jax.jit
  def amplification(params, layer, sigma, key, tokens, targets):
    stream, logits = hidden_states(graphdef, block_def, params, tokens)
    noisy_stream, noisy_logits = hidden_states(
        graphdef, block_def, perturb_block(params, layer, sigma, key), tokens)
    deviation = jax.vmap(_relative)(noisy_stream - stream, stream)
    ratio = deviation[-1] / deviation[layer + 1]
    delta_ce = _mean_ce(noisy_logits, targets) - _mean_ce(logits, targets)
    return deviation, ratio, delta_ce

  return amplification
