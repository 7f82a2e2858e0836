"""Normalisation layers: LayerNorm or RMSNorm over the embedding axis, and QK-norm."""

from flax import nnx

from bigmodel_jax.models import initializers
from bigmodel_jax.models.config import TransformerConfig

NORM_AXES = ("norm",)
HEAD_NORM_AXES = ("head_dim",)


def make_norm(config: TransformerConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the configured norm (`config.norm`) over the embedding axis.

  Statistics are computed in float32; the output is in the compute dtype.

  Args:
    config: the model config.
    rngs: random streams (unused by the constant initialisers, required by nnx).

  Returns:
    nnx.LayerNorm (params `scale`, and `bias` iff config.use_bias) for "layernorm",
    nnx.RMSNorm (param `scale`) for "rmsnorm".
  """
  kwargs = dict(epsilon=config.norm_eps, dtype=config.compute_dtype,
                param_dtype=config.weight_dtype, scale_init=initializers.ones(NORM_AXES),
                rngs=rngs)
  if config.norm == "layernorm":
    return nnx.LayerNorm(config.embed_dim, use_bias=config.norm_bias,
                         bias_init=initializers.zeros(NORM_AXES), **kwargs)
  return nnx.RMSNorm(config.embed_dim, **kwargs)


def make_head_norm(config: TransformerConfig, *, rngs: nnx.Rngs) -> nnx.RMSNorm:
  """The QK-norm of queries or keys: RMSNorm over head_dim, one scale shared by the heads.

  Args:
    config: the model config.
    rngs: random streams (unused by the constant initialiser, required by nnx).

  Returns:
    nnx.RMSNorm (param `scale`, [head_dim], logical axis "head_dim").
  """
  return nnx.RMSNorm(config.head_dim, epsilon=config.norm_eps, dtype=config.compute_dtype,
                     param_dtype=config.weight_dtype,
                     scale_init=initializers.ones(HEAD_NORM_AXES), rngs=rngs)
