"""Exact memory of a training setup, without allocating it.

State bytes come from `jax.eval_shape` of the optimizer's init; the step's peak comes from XLA's
memory analysis of the compiled (never executed) train step, on the current mesh, per device.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from bigmodel_jax import sharding
from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.sharding import tree_bytes
from bigmodel_jax.train.state import abstract_train_state
from bigmodel_jax.train.step import make_train_step


def state_bytes(model_config: TransformerConfig, optimizer: optax.GradientTransformation,
                mesh: Mesh, rules) -> tuple[int, int, int]:
  """(number of parameters, parameter bytes, optimizer-state bytes), all global."""
  _, abstract = abstract_train_state(model_config, optimizer, mesh, rules)
  num_params = sum(int(x.size) for x in jax.tree.leaves(abstract.params))
  return num_params, tree_bytes(abstract.params), tree_bytes(abstract.opt_state)


def compiled_peak_bytes(make_step, model_config: TransformerConfig, optimizer, mesh: Mesh, rules,
                        *, global_batch_size: int, seq_len: int) -> int:
  """Peak bytes per device of a jitted train step, from XLA's memory analysis (compile only).

  Peak = arguments + outputs - donated (aliased) buffers + temporaries. The step is lowered and
  compiled on abstract inputs only.

  Args:
    make_step: graphdef -> train_step(state, batch), e.g. a partial of `make_train_step`.
    model_config: the model configuration.
    optimizer: the optax transformation.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    global_batch_size: sequences per step.
    seq_len: tokens per sequence.

  Returns:
    The peak device memory in bytes.
  """
  graphdef, abstract = abstract_train_state(model_config, optimizer, mesh, rules)
  state_shardings = jax.tree.map(lambda x: x.sharding, abstract)
  batch_sharding = sharding.batch_sharding(mesh)
  tokens = jax.ShapeDtypeStruct((global_batch_size, seq_len), jnp.int32, sharding=batch_sharding)
  batch = {"inputs": tokens, "targets": tokens,
           "weights": jax.ShapeDtypeStruct(tokens.shape, jnp.float32, sharding=batch_sharding)}
  step = jax.jit(make_step(graphdef), in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)
  analysis = step.lower(abstract, batch).compile().memory_analysis()
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def compiled_step_peak_bytes(model_config: TransformerConfig, optimizer, schedule, mesh: Mesh,
                             rules, *, global_batch_size: int, seq_len: int,
                             grad_accum_steps: int = 1) -> int:
  """Peak bytes per device of the standard (unfused) train step; see `compiled_peak_bytes`."""
  return compiled_peak_bytes(
      lambda graphdef: make_train_step(graphdef, optimizer, schedule, grad_accum_steps),
      model_config, optimizer, mesh, rules, global_batch_size=global_batch_size,
      seq_len=seq_len)
