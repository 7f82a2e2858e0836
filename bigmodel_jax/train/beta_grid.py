"""One model trained with Adam at every (b1, b2) of a grid at once, in one jitted program.

The phase diagram of Zhang et al. (NeurIPS 2022, Fig. 1 b, c) on a real network: every cell
starts from the same parameters and sees the same batches in the same order; only Adam's decays
differ. The cells are a `jax.vmap` axis (the decays are traced, so one compilation serves the
whole grid) inside a `jax.lax.scan` over steps.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.train.step import make_loss_fn


class GridCurves(NamedTuple):
  """Per-cell loss curves.

  Attributes:
    train_loss: float32[cells, steps], the loss of each step's batch before its update.
    eval_loss: float32[cells, eval_steps], the loss of a fixed batch after each of the last
      eval_steps updates.
  """

  train_loss: jax.Array
  eval_loss: jax.Array


def train_beta_grid(graphdef: nnx.GraphDef, params, batches: dict, eval_batch: dict,
                    b1: jax.Array, b2: jax.Array, *, learning_rate: float, eps: float,
                    eval_steps: int) -> GridCurves:
  """Trains from `params` with `optax.adam(learning_rate, b1, b2, eps)` for every cell.

  Args:
    graphdef: the model's graph (`nnx.split`).
    params: the initial parameters (pure dict), shared by every cell.
    batches: {"inputs", "targets", "weights"} with a leading steps axis.
    eval_batch: one batch, evaluated after each of the last `eval_steps` updates.
    b1: float32[cells] first-moment decays.
    b2: float32[cells] second-moment decays.
    learning_rate: Adam's (constant) step size.
    eps: Adam's epsilon.
    eval_steps: how many final steps are followed by an evaluation.

  Returns:
    The per-cell curves.
  """
  loss_sum = make_loss_fn(graphdef)

  def mean_loss(p, batch):
    total, weight = loss_sum(p, batch)
    return total / weight

  def train_cell(b1, b2):
    optimizer = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

    def step(carry, batch, evaluate):
      p, opt_state = carry
      loss, grads = jax.value_and_grad(mean_loss)(p, batch)
      updates, opt_state = optimizer.update(grads, opt_state, p)
      p = optax.apply_updates(p, updates)
      return (p, opt_state), (loss, mean_loss(p, eval_batch) if evaluate else jnp.nan)

    num_steps = jax.tree.leaves(batches)[0].shape[0]
    head = jax.tree.map(lambda x: x[:num_steps - eval_steps], batches)
    tail = jax.tree.map(lambda x: x[num_steps - eval_steps:], batches)
    carry = (params, optimizer.init(params))
    carry, (head_loss, _) = jax.lax.scan(lambda c, b: step(c, b, False), carry, head)
    _, (tail_loss, eval_loss) = jax.lax.scan(lambda c, b: step(c, b, True), carry, tail)
    return GridCurves(jnp.concatenate([head_loss, tail_loss]), eval_loss)

  return jax.jit(jax.vmap(train_cell))(b1, b2)
