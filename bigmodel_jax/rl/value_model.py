"""A value model for PPO: a transformer trunk and a scalar head on its final hidden states."""

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import TransformerConfig, create_model, initializers


class ValueModel(nnx.Module):
  """V(prefix) for every position: head(final-normalised hidden state), float32[batch, length].

  The trunk is a full GPT-2 / Llama (its LM head unused), so it can start from the policy's
  weights, as in InstructGPT-style PPO (Ouyang et al., 2022); the head starts at zero.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.trunk = create_model(config, rngs)
    with nnx.use_eager_sharding(False):
      self.head = nnx.Linear(config.embed_dim, 1, dtype=config.compute_dtype,
                             param_dtype=config.weight_dtype,
                             kernel_init=initializers.zeros(("embed", None)),
                             bias_init=initializers.zeros((None,)), rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """float32[batch, length] values of the prefixes ending at each position."""
    return self.head(self.trunk.features(tokens))[..., 0].astype(jnp.float32)


def init_value_params(config: TransformerConfig, policy_params, seed: int = 0):
  """(graphdef, params) of a value model whose trunk is a copy of the policy's parameters.

  Args:
    config: the policy's model config.
    policy_params: the policy's parameters (pure dict).
    seed: seed of the (zero) head's rng stream, for determinism.

  Returns:
    The value model's graph definition and pure-dict parameters.
  """
  graphdef, params = nnx.split(ValueModel(config, rngs=nnx.Rngs(seed)))
  params = nnx.to_pure_dict(params)
  params["trunk"] = jax.tree.map(jnp.copy, policy_params)
  return graphdef, params
