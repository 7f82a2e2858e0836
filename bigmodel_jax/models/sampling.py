"""Autoregressive sampling with a KV cache: one prefill, then a decode loop of static length.

The prompt is run once through `Transformer.cached` at index 0 (prefill); each of the
`max_new_tokens` decode steps feeds one token and reads the keys and values of all earlier
positions from the cache (Pope et al., "Efficiently Scaling Transformer Inference", 2022), so
a step costs O(length) attention instead of a forward pass over the whole prefix. The loop is a
`jax.lax.scan` with static shapes, so the whole generation jits to one program.

Rows can be greedy or sampled (temperature, top-k, top-p) within one call, so the sampled and
the greedy responses of the same prompts (what ReMax needs) share one prefill and one loop.
A response stops at its first EOS: the EOS itself stays in the mask, the tokens after it are
`pad_id` with mask False.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models.logit_filters import filter_logits


class Generation(NamedTuple):
  """Responses of one generate call.

  Attributes:
    tokens: int32[batch, max_new_tokens] response tokens, pad_id after the first EOS.
    mask: bool[batch, max_new_tokens], True up to and including the first EOS.
  """

  tokens: jax.Array
  mask: jax.Array

  @property
  def lengths(self) -> jax.Array:
    """int32[batch] response lengths (EOS included)."""
    return self.mask.sum(axis=-1).astype(jnp.int32)


class SamplingOptions(NamedTuple):
  """How to draw the next token (static: each distinct value compiles its own program).

  Attributes:
    max_new_tokens: response length (the loop always runs this many steps).
    temperature: softmax temperature of the sampled rows (> 0).
    top_k: keep the k most likely tokens (0: all).
    top_p: nucleus mass (1.0: all).
    eos_id: the token that ends a response, or None for fixed-length responses.
    pad_id: the token written after EOS.
  """

  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  eos_id: int | None = None
  pad_id: int = 0


def _next_token(logits: jax.Array, greedy: jax.Array, key: jax.Array,
                options: SamplingOptions) -> jax.Array:
  """Argmax for greedy rows, a draw from the filtered distribution for the others."""
  drawn = jax.random.categorical(
      key, filter_logits(logits, temperature=options.temperature, top_k=options.top_k,
                         top_p=options.top_p), axis=-1)
  return jnp.where(greedy, jnp.argmax(logits, axis=-1), drawn).astype(jnp.int32)


def generate(graphdef: nnx.GraphDef, params: dict, prompts: jax.Array, key: jax.Array,
             options: SamplingOptions, greedy: jax.Array | bool = False) -> Generation:
  """Generates `options.max_new_tokens` tokens after each prompt, with a KV cache.

  The model is passed split (`nnx.split`), so this is a pure function of arrays and jits.

  Args:
    graphdef: the graph definition of a Transformer.
    params: its parameters as a pure dict (`nnx.to_pure_dict`), as the train state holds them.
    prompts: int32[batch, prompt_len] prompts, all of one length (no padding).
    key: PRNG key of the draws.
    options: the sampling options.
    greedy: bool or bool[batch], which rows decode greedily.

  Returns:
    The responses.
  """
  batch, prompt_len = prompts.shape
  steps = options.max_new_tokens
  greedy = jnp.broadcast_to(jnp.asarray(greedy, bool), (batch,))
  model = nnx.merge(graphdef, params)
  cache = model.init_cache(batch, prompt_len + steps)
  logits, cache = model.cached(prompts, cache, jnp.int32(0))
  eos = -1 if options.eos_id is None else options.eos_id

  def step(carry, inputs):
    cache, logits, done = carry
    index, step_key = inputs
    token = _next_token(logits, greedy, step_key, options)
    token = jnp.where(done, options.pad_id, token)
    alive = ~done
    done = done | (token == eos)
    # Merged inside the step: NNX modules cannot cross into a jax.lax.scan trace.
    next_logits, cache = nnx.merge(graphdef, params).cached(token[:, None], cache,
                                                            prompt_len + index)
    return (cache, next_logits[:, -1], done), (token, alive)

  inputs = (jnp.arange(steps, dtype=jnp.int32), jax.random.split(key, steps))
  carry = (cache, logits[:, -1], jnp.zeros((batch,), bool))
  _, (tokens, mask) = jax.lax.scan(step, carry, inputs)
  return Generation(tokens.T, mask.T)


def generate_sampled_and_greedy(graphdef: nnx.GraphDef, params: dict, prompts: jax.Array,
                                key: jax.Array, options: SamplingOptions,
                                samples_per_prompt: int = 1) -> tuple[Generation, Generation]:
  """Sampled and greedy responses of the same prompts, in one prefill and one decode loop.

  Args:
    graphdef: the graph definition of a Transformer.
    params: its parameters (pure dict).
    prompts: int32[batch, prompt_len].
    key: PRNG key of the sampled rows.
    options: the sampling options of the sampled rows.
    samples_per_prompt: k sampled responses per prompt (rows i*k .. i*k+k-1 belong to prompt i).

  Returns:
    (sampled generation of batch * k rows, greedy generation of batch rows).
  """
  num_sampled = prompts.shape[0] * samples_per_prompt
  both = jnp.concatenate([jnp.repeat(prompts, samples_per_prompt, axis=0), prompts], axis=0)
  greedy = jnp.arange(both.shape[0]) >= num_sampled
  out = generate(graphdef, params, both, key, options, greedy)
  return (jax.tree.map(lambda x: x[:num_sampled], out),
          jax.tree.map(lambda x: x[num_sampled:], out))


def make_greedy_decoder(graphdef: nnx.GraphDef, max_new_tokens: int):
  """The greedy decoder of a model, jitted: (params, prompts int32[b, p]) -> int32[b, n].

  `generate` with every row greedy and fixed-length responses (no EOS), for scoring answers.

  Args:
    graphdef: the graph definition of a Transformer.
    max_new_tokens: n, the response length.

  Returns:
    decode(params, prompts) -> the greedy tokens after each prompt.
  """
  options = SamplingOptions(max_new_tokens=max_new_tokens)

  @jax.jit
  def decode(params, prompts):
    return generate(graphdef, params, prompts, jax.random.key(0), options, greedy=True).tokens

  return decode
