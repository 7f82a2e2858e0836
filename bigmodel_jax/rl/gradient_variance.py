"""The spread of a method's stochastic gradient at fixed parameters.

Each estimate is one step's policy gradient from an independent batch (fresh prompts and
samples): the step is run with `optax.sgd(1.0)`, so the parameter change is exactly minus the
gradient. Over many batches, the mean estimates the expected gradient and the total variance
(trace of the covariance) measures the estimator's noise, which a good baseline reduces without
moving the mean (Greensmith et al., "Variance Reduction Techniques for Gradient Estimates in
Reinforcement Learning", JMLR 2004).
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from bigmodel_jax.rl.rollout import Method
from bigmodel_jax.rl.state import RLState


def gradient_estimates(method: Method, state: RLState, prompts: jax.Array,
                       keys: jax.Array) -> jax.Array:
  """float32[m, num_params]: one flattened gradient per (prompt batch, key).

  Args:
    method: a method built with `optax.sgd(1.0)` as its optimizer.
    state: the state at the fixed parameters.
    prompts: int32[m, batch, p], one prompt batch per estimate.
    keys: [m] PRNG keys.

  Returns:
    The gradients, computed one batch at a time (jax.lax.map).
  """
  flat_params, _ = ravel_pytree(state.params)

  def estimate(args):
    batch, key = args
    new_state, _ = method.step(state, batch, key)
    return flat_params - ravel_pytree(new_state.params)[0]

  return jax.lax.map(estimate, (prompts, keys))


def total_variance(estimates: jax.Array) -> jax.Array:
  """Trace of the covariance of the estimates: mean squared distance to their mean."""
  return jnp.mean(jnp.sum((estimates - estimates.mean(axis=0)) ** 2, axis=1))
