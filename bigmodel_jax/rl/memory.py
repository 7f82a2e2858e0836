"""Exact memory of an RL method: its state bytes and its compiled step's XLA memory analysis."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.rl.factory import make_method
from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.rollout import Method
from bigmodel_jax.rl.state import RLState, state_bytes
from bigmodel_jax.sharding import abstract_model


def compile_step(method: Method, state: RLState, prompts: jax.Array, key: jax.Array):
  """The method's step, jitted with the state donated (as a training loop runs it), compiled
  for the shapes of `state` and `prompts` (concrete or abstract; nothing is run)."""
  abstract = jax.eval_shape(lambda s: s, state)
  return jax.jit(method.step, donate_argnums=0).lower(abstract, prompts, key).compile()


def compiled_memory(compiled) -> dict:
  """XLA's memory analysis of a compiled step: peak = arguments + outputs - aliased (donated)
  + temporaries, and the temporaries alone."""
  analysis = compiled.memory_analysis()
  peak = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)
  return {"step_peak_bytes": int(peak), "step_temp_bytes": int(analysis.temp_size_in_bytes)}


def step_memory(method: Method, state: RLState, prompts: jax.Array, key: jax.Array) -> dict:
  """State bytes per part, and the compiled step's memory (compiled, never run).

  Args:
    method: the method.
    state: its state (concrete or abstract).
    prompts: a prompt batch (concrete or abstract).
    key: a PRNG key.

  Returns:
    {"state_bytes": {part: bytes, "total": bytes}, "step_peak_bytes", "step_temp_bytes"}.
  """
  compiled = compile_step(method, state, prompts, key)
  return {"state_bytes": state_bytes(jax.eval_shape(lambda s: s, state)),
          **compiled_memory(compiled)}


def _sizing_reward(prompts: jax.Array, responses: jax.Array, mask: jax.Array) -> jax.Array:
  del prompts, responses
  return mask.mean(axis=1, dtype=jnp.float32)


def abstract_method(name: str, model_config: TransformerConfig,
                    optimizer: optax.GradientTransformation, options: RLOptions
                    ) -> tuple[Method, RLState]:
  """Method `name` on a model of `model_config`, and its abstract state (nothing allocated).

  The reward is a stand-in (the fraction of the response before EOS): any jnp reward costs
  next to nothing beside the model.
  """
  graphdef, params = abstract_model(model_config)
  built = {}

  def build(params):
    method, state = make_method(name, model_config, graphdef, params, optimizer,
                                _sizing_reward, options)
    built["method"] = method
    return state

  state = jax.eval_shape(build, nnx.to_pure_dict(params))
  return built["method"], state


def method_memory(name: str, model_config: TransformerConfig,
                  optimizer: optax.GradientTransformation, options: RLOptions, *,
                  batch_size: int, prompt_len: int, compile_step: bool) -> dict:
  """`step_memory` of a method on abstract prompts int32[batch_size, prompt_len] (or only the
  state bytes when not compile_step), for experiments.memory."""
  method, state = abstract_method(name, model_config, optimizer, options)
  if not compile_step:
    return {"state_bytes": state_bytes(state)}
  prompts = jax.ShapeDtypeStruct((batch_size, prompt_len), jnp.int32)
  return step_memory(method, state, prompts, jax.random.key(0))
