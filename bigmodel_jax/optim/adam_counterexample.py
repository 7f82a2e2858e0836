"""Adam on Zhang et al.'s counterexample, vectorised over a (b1, b2) grid.

Zhang, Chen, Shi, Sun, Luo, "Adam Can Converge Without Any Modification On Update Rules"
(NeurIPS 2022, arXiv 2208.09632), counterexample (2.5) of the journal version: a finite sum of
n one-dimensional functions, f = (1/n) sum_i f_i, with

  f_0(x) = (1 + (n-1) a) x                                 for x >= -1,
           (1 + (n-1) a)/2 (x+2)^2 - 3 (1 + (n-1) a)/2     for x < -1,
  f_i(x) = -a x                                            for x >= -1   (i = 1 .. n-1),
           -a/2 (x+2)^2 + 3a/2                             for x < -1,

so f(x) = x/n for x >= -1 and ((x+2)^2/2 - 3/2)/n below: C^1, minimised at x* = -2. With small
b2, Adam's m/sqrt(v) is close to the sign of the latest gradients, so the n - 1 minority samples
out-vote the one large gradient and x drifts away: the divergence region of (b1, b2) grows with
n, while large b2 converges (the paper's Theorem: b1 < sqrt(b2), b2 above a threshold that grows
with n).

`adam_gaps` runs the library's Adam (optax.adam semantics: bias correction, eps outside the
square root) with step size eta0 / sqrt(k) on every grid cell at once: `jax.vmap` over cells
inside a `jax.lax.scan` over steps, one index sequence shared by all cells.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

X_STAR = -2.0  # the minimiser of f


def sample_gradients(x: jax.Array, n: int, a: float) -> tuple[jax.Array, jax.Array]:
  """The gradients of f_0 and of every other f_i at x.

  Args:
    x: points (any shape).
    n: number of functions in the sum (>= 3).
    a: the minority slope (> 0).

  Returns:
    (grad f_0(x), grad f_i(x) for i >= 1), each of x's shape.
  """
  big = 1 + (n - 1) * a
  above = x >= -1
  return jnp.where(above, big, big * (x + 2)), jnp.where(above, -a, -a * (x + 2))


def sample_losses(x: jax.Array, n: int, a: float) -> tuple[jax.Array, jax.Array]:
  """The values of f_0 and of every other f_i at x (the gradients' antiderivatives)."""
  big = 1 + (n - 1) * a
  above = x >= -1
  f0 = jnp.where(above, big * x, big / 2 * (x + 2) ** 2 - 3 * big / 2)
  fi = jnp.where(above, -a * x, -a / 2 * (x + 2) ** 2 + 3 * a / 2)
  return f0, fi


def sample_order(key: jax.Array, n: int, steps: int, sampling: str) -> jax.Array:
  """The index of the function sampled at each step.

  Args:
    key: PRNG key.
    n: number of functions.
    steps: number of steps.
    sampling: "iid" (uniform with replacement, as in the thesis) or "shuffle" (a fresh
      permutation every n steps, as in the NeurIPS paper).

  Returns:
    int32[steps] indices in [0, n).
  """
  if sampling == "iid":
    return jax.random.randint(key, (steps,), 0, n)
  if sampling == "shuffle":
    epochs = -(-steps // n)
    keys = jax.random.split(key, epochs)
    return jax.vmap(lambda k: jax.random.permutation(k, n))(keys).reshape(-1)[:steps]
  raise ValueError(f"sampling must be 'iid' or 'shuffle', got {sampling!r}")


class AdamCell(NamedTuple):
  """The state of Adam on one grid cell."""

  x: jax.Array
  m: jax.Array
  v: jax.Array


def adam_gaps(b1: jax.Array, b2: jax.Array, *, n: int, a: float, x0: float, steps: int,
              eta0: float, eps: float, order: jax.Array) -> jax.Array:
  """Runs Adam with step eta0 / sqrt(k) on f from x0 for every (b1, b2) pair at once.

  Args:
    b1: first-moment decays, any shape.
    b2: second-moment decays, b1's shape.
    n: number of functions in the sum.
    a: the minority slope.
    x0: the starting point.
    steps: number of steps.
    eta0: the step size at k = 1.
    eps: Adam's epsilon (added to sqrt of the bias-corrected v).
    order: int[steps] sampled indices (`sample_order`), shared by every cell.

  Returns:
    |x_T - x*| of b1's shape.
  """
  b1, b2 = jnp.broadcast_arrays(jnp.asarray(b1), jnp.asarray(b2))
  start = AdamCell(jnp.full(b1.shape, x0, b1.dtype), jnp.zeros_like(b1), jnp.zeros_like(b1))

  def step(cell: AdamCell, inputs) -> tuple[AdamCell, None]:
    k, index = inputs
    g0, gi = sample_gradients(cell.x, n, a)
    g = jnp.where(index == 0, g0, gi)
    m = b1 * cell.m + (1 - b1) * g
    v = b2 * cell.v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**k), v / (1 - b2**k)
    x = cell.x - eta0 / jnp.sqrt(k) * m_hat / (jnp.sqrt(v_hat) + eps)
    return AdamCell(x, m, v), None

  ks = jnp.arange(1, steps + 1, dtype=b1.dtype)
  final, _ = jax.lax.scan(step, start, (ks, order))
  return jnp.abs(final.x - X_STAR)


def beta_grid(b1_values, b2_values) -> tuple[np.ndarray, np.ndarray]:
  """The (b2 rows, b1 columns) grid of a phase diagram, as two float64 arrays."""
  return np.meshgrid(np.asarray(b1_values, np.float64), np.asarray(b2_values, np.float64))
