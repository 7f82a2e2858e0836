"""Exact memory of an RL method: its state bytes and its compiled step's XLA memory analysis."""

import jax

from bigmodel_jax.rl.rollout import Method
from bigmodel_jax.rl.state import RLState, state_bytes


def step_memory(method: Method, state: RLState, prompts: jax.Array, key: jax.Array) -> dict:
  """State bytes per part, and the compiled step's memory (compiled, never run).

  The step is jitted with the state donated, as a training loop runs it; peak = arguments +
  outputs - aliased (donated) + temporaries, from XLA's memory analysis.

  Args:
    method: the method.
    state: its state (concrete or abstract).
    prompts: a prompt batch (concrete or abstract).
    key: a PRNG key.

  Returns:
    {"state_bytes": {part: bytes, "total": bytes}, "step_peak_bytes", "step_temp_bytes"}.
  """
  abstract = jax.eval_shape(lambda s: s, state)
  compiled = jax.jit(method.step, donate_argnums=0).lower(abstract, prompts, key).compile()
  analysis = compiled.memory_analysis()
  peak = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)
  return {"state_bytes": state_bytes(abstract), "step_peak_bytes": int(peak),
          "step_temp_bytes": int(analysis.temp_size_in_bytes)}
