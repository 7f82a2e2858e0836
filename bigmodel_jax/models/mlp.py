"""Feed-forward blocks: GELU MLP (GPT-2) and SwiGLU (Llama)."""

import jax
from flax import nnx

from bigmodel_jax.models import initializers
from bigmodel_jax.models.config import TransformerConfig


def _dense(config: TransformerConfig, in_dim: int, out_dim: int, names: tuple[str, str], *,
           stddev: float, rngs: nnx.Rngs) -> nnx.Linear:
  """A Linear with logical axis names; biased iff the architecture uses biases."""
  return nnx.Linear(
      in_dim, out_dim, use_bias=config.use_bias, dtype=config.compute_dtype,
      param_dtype=config.weight_dtype, kernel_init=initializers.normal(names, stddev),
      bias_init=initializers.zeros(names[1:]), rngs=rngs)


class GeluMLP(nnx.Module):
  """GPT-2 MLP: down(gelu_tanh(up(x))), with biases."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    d, f = config.embed_dim, config.mlp_dim
    out_std = initializers.residual_stddev(config.num_layers)
    self.up = _dense(config, d, f, ("embed", "mlp"), stddev=initializers.INIT_STDDEV, rngs=rngs)
    self.down = _dense(config, f, d, ("mlp", "embed"), stddev=out_std, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the MLP.

    Args:
      x: [batch, length, embed] normalised residual stream.

    Returns:
      [batch, length, embed] in the compute dtype.
    """
    return self.down(jax.nn.gelu(self.up(x), approximate=True))


class SwiGLU(nnx.Module):
  """Llama MLP: down(silu(gate(x)) * up(x)), no biases."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    d, f = config.embed_dim, config.mlp_dim
    out_std = initializers.residual_stddev(config.num_layers)
    self.gate = _dense(config, d, f, ("embed", "mlp"), stddev=initializers.INIT_STDDEV, rngs=rngs)
    self.up = _dense(config, d, f, ("embed", "mlp"), stddev=initializers.INIT_STDDEV, rngs=rngs)
    self.down = _dense(config, f, d, ("mlp", "embed"), stddev=out_std, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the MLP.

    Args:
      x: [batch, length, embed] normalised residual stream.

    Returns:
      [batch, length, embed] in the compute dtype.
    """
    return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


def make_mlp(config: TransformerConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the architecture's MLP (GeluMLP for GPT-2, SwiGLU for Llama)."""
  return GeluMLP(config, rngs=rngs) if config.architecture == "gpt2" else SwiGLU(config, rngs=rngs)
