"""A few texts sampled from a trained language model, to show what it learned."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax.models.sampling import SamplingOptions, generate


def sample_texts(graphdef: nnx.GraphDef, params: dict, tokenizer, *, num_samples: int,
                 max_new_tokens: int, seed: int, temperature: float = 0.8) -> list[str]:
  """Samples documents from the model, each started by EOS (the start of a new document).

  Args:
    graphdef: the model's graph definition.
    params: its parameters (pure dict, as the train state holds them).
    tokenizer: the tokenizer (eos_id, decode).
    num_samples: how many texts.
    max_new_tokens: tokens per text (fewer if a text ends with EOS).
    seed: PRNG seed of the draws.
    temperature: softmax temperature.

  Returns:
    The decoded texts, without EOS.
  """
  prompts = jnp.full((num_samples, 1), tokenizer.eos_id, jnp.int32)
  options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature,
                            eos_id=tokenizer.eos_id, pad_id=tokenizer.eos_id)
  run = jax.jit(generate, static_argnums=(0, 4))
  out = jax.device_get(run(graphdef, params, prompts, jax.random.key(seed), options))
  return [tokenizer.decode(tokens[mask & (tokens != tokenizer.eos_id)])
          for tokens, mask in zip(np.asarray(out.tokens), np.asarray(out.mask))]
