"""The recovery difficulty RD(n) of closing the bottom n blocks, and SCARA's choice n*.

Huang et al., arXiv 2410.11182, SCARA/RD-Llama.py (spec A.3.1): with theta_rand one fresh
full-model draw, RD_full = CE(theta_rand) and RD(n) = CE(victim with blocks 0..n-1 taken from
theta_rand; embeddings, final norm and head the victim's), each the mean over the same batches of
the per-batch token-mean cross-entropy, forward passes only. SCARA closes the smallest n in
[1, L-1] with (1 + tau) RD(n) >= RD_full. The paper's expectation over initialisations is the
mean over several draws here.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax.semi_open.replacement import replace_layers
from bigmodel_jax.train.step import make_loss_fn


@functools.cache
def make_masked_loss(graphdef: nnx.GraphDef):
  """A jitted mean-of-batch-means cross-entropy of the victim with the masked blocks replaced.

  Args:
    graphdef: the model's graph.

  Returns:
    loss(params, fresh, mask, batches) -> float32 scalar, where batches stacks the
    {"inputs", "targets", "weights"} of every batch on a leading axis; one compilation serves
    every mask. Cached per graph, so every caller shares the compilation.
  """
  loss_sum = make_loss_fn(graphdef)

  @jax.jit
  def loss(params, fresh, mask, batches):
    replaced = replace_layers(params, fresh, mask)

    def batch_mean(batch):
      total, weight = loss_sum(replaced, batch)
      return total / weight

    return jnp.mean(jax.lax.map(batch_mean, batches))

  return loss


@functools.cache
def make_full_loss(graphdef: nnx.GraphDef):
  """A jitted mean-of-batch-means cross-entropy of a whole parameter set (RD_full, victim CE).

  Cached per graph, so every caller shares the compilation.
  """
  loss_sum = make_loss_fn(graphdef)

  @jax.jit
  def loss(params, batches):
    return jnp.mean(jax.lax.map(lambda b: jnp.divide(*loss_sum(params, b)), batches))

  return loss


def rd_curve(graphdef: nnx.GraphDef, params: dict, fresh_draws: Sequence[dict], batches: dict,
             num_layers: int) -> dict:
  """RD(n) for n = 0..L and RD_full, for every fresh draw.

  Args:
    graphdef: the model's graph.
    params: the victim's parameters (pure dict).
    fresh_draws: one fresh full-model parameter set per initialisation seed.
    batches: D_RD, batches stacked on a leading axis (the same for every evaluation).
    num_layers: L.

  Returns:
    {"rd": float64[seeds, L + 1] (RD(0) is the victim's CE), "rd_full": float64[seeds]}.
  """
  masked, full = make_masked_loss(graphdef), make_full_loss(graphdef)
  rd = np.zeros((len(fresh_draws), num_layers + 1))
  rd_full = np.zeros(len(fresh_draws))
  for s, fresh in enumerate(fresh_draws):
    rd_full[s] = float(full(fresh, batches))
    for n in range(num_layers + 1):
      rd[s, n] = float(masked(params, fresh, jnp.arange(num_layers) < n, batches))
  return {"rd": rd, "rd_full": rd_full}


def scara_choice(rd: Sequence[float], rd_full: float, tolerance: float) -> int:
  """SCARA's number of closed bottom blocks: min{n in [1, L-1] : (1 + tau) RD(n) >= RD_full}.

  The code's rule (RD-Llama.py); the paper's RD(n) >= (1 - eps) RD_full with
  eps = tau / (1 + tau). When no n qualifies every block is closed (n* = L).

  Args:
    rd: RD(0..L) (at least RD(0..L-1); length L + 1 gives L).
    rd_full: the fully random model's loss.
    tolerance: tau (train_config.tolerance_magnitude = 0.2 in the code).

  Returns:
    n* in [1, L].
  """
  num_layers = len(rd) - 1
  for n in range(1, num_layers):
    if (1 + tolerance) * rd[n] >= rd_full:
      return n
  return num_layers
