"""Feed-forward blocks: GELU MLP and SwiGLU."""

import jax
from flax import nnx

from bigmodel_jax.models import initializers
from bigmodel_jax.models.config import TransformerConfig


def _dense(config: TransformerConfig, in_dim: int, out_dim: int, names: tuple[str, str], *,
           stddev: float, rngs: nnx.Rngs) -> nnx.Linear:
  """A Linear with logical axis names; biased iff config.use_bias."""
  return nnx.Linear(
      in_dim, out_dim, use_bias=config.use_bias, dtype=config.compute_dtype,
      param_dtype=config.weight_dtype, kernel_init=initializers.normal(names, stddev),
      bias_init=initializers.zeros(names[1:]), rngs=rngs)


class GeluMLP(nnx.Module):
  """GELU MLP (GPT-2): down(gelu_tanh(up(x)))."""

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
  """SwiGLU MLP (Llama): down(silu(gate(x)) * up(x))."""

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
  """Builds the configured MLP: GeluMLP for config.mlp "gelu", SwiGLU for "swiglu"."""
  return GeluMLP(config, rngs=rngs) if config.mlp == "gelu" else SwiGLU(config, rngs=rngs)
