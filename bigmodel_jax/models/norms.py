"""Normalisation layers: LayerNorm (GPT-2) and RMSNorm (Llama)."""

from flax import nnx

from bigmodel_jax.models import initializers
from bigmodel_jax.models.config import TransformerConfig

NORM_AXES = ("norm",)


def make_norm(config: TransformerConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the architecture's norm over the embedding axis.

  Statistics are computed in float32; the output is in the compute dtype.

  Args:
    config: the model config.
    rngs: random streams (unused by the constant initialisers, required by nnx).

  Returns:
    nnx.LayerNorm (params `scale`, `bias`) for GPT-2, nnx.RMSNorm (param `scale`) for Llama.
  """
  kwargs = dict(epsilon=config.norm_eps, dtype=config.compute_dtype,
                param_dtype=config.weight_dtype, scale_init=initializers.ones(NORM_AXES),
                rngs=rngs)
  if config.architecture == "gpt2":
    return nnx.LayerNorm(config.embed_dim, bias_init=initializers.zeros(NORM_AXES), **kwargs)
  return nnx.RMSNorm(config.embed_dim, **kwargs)
