"""Lanczos tridiagonalisation over pytrees, in lax loops, with Ritz values and quadrature weights.

The loop is a `lax.fori_loop`, so compile time does not depend on the number of steps (the
JAX Lanczos of google/spectral-density is a Python loop that takes minutes to compile). Vectors
stay pytrees (no ravel into one vector): a sharded parameter tree gives sharded Lanczos vectors.
The Lanczos vectors and scalars are kept in float64 (when x64 is enabled) while the operator runs
in the dtypes of the start vector (the model dtype). A breakdown (an invariant subspace found,
beta ~ 0) masks the remaining steps: they contribute Ritz values with zero quadrature weight.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024),
App. (SLQ: 100 steps, 10 probes, float64, no reorthogonalisation); Golub & Meurant (2010).
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

REORTH = ("none", "full")


class LanczosResult(NamedTuple):
  """The tridiagonal T of a Lanczos run (leading axes: probes, when batched).

  Attributes:
    alphas: [..., k] diagonal of T.
    betas: [..., k] off-diagonal: betas[j] couples steps j and j+1 (the last is the residual).
    valid: [..., k] whether step j ran before a breakdown.
  """

  alphas: jax.Array
  betas: jax.Array
  valid: jax.Array


def lanczos_dtype(dtype=None):
  """float64 when x64 is enabled (or `dtype` if given), else float32 with a warning."""
  if dtype is not None:
    return jnp.dtype(dtype)
  if jax.config.jax_enable_x64:
    return jnp.dtype(jnp.float64)
  logging.getLogger(__name__).warning(
      "jax_enable_x64 is off: Lanczos runs in float32 (enable x64 for the paper's float64)")
  return jnp.dtype(jnp.float32)


def _reorthogonalise(basis, w):
  """w minus its projection on the rows of `basis` (classical Gram-Schmidt, twice)."""
  for _ in range(2):
    coeffs = sum(jnp.tensordot(b, x, axes=x.ndim)
                 for b, x in zip(jax.tree.leaves(basis), jax.tree.leaves(w)))
    w = jax.tree.map(lambda b, x, c=coeffs: x - jnp.tensordot(c, b, axes=1), basis, w)
  return w


def check_counts(**counts: int) -> None:
  """Raises ValueError naming every count (num_steps, num_probes, ...) that is not >= 1."""
  bad = {name: n for name, n in counts.items() if not isinstance(n, int | np.integer) or n < 1}
  if bad:
    raise ValueError(", ".join(f"{name} must be an integer >= 1, got {n!r}"
                               for name, n in bad.items()))


def lanczos(matvec: Callable, v0, num_steps: int, reorth: str = "none", dtype=None,
            breakdown_tol: float | None = None) -> LanczosResult:
  """Runs `num_steps` Lanczos steps of a symmetric operator from the start vector `v0`.

  Args:
    matvec: v -> A v on pytrees like `v0`, called with `v0`'s dtypes (the model dtype).
    v0: the start vector (a pytree; normalised here; need not be unit).
    num_steps: k, the size of T.
    reorth: "none" (the paper's choice) or "full" (reorthogonalise against every previous
      Lanczos vector; stores k vectors).
    dtype: the dtype of the Lanczos vectors and scalars; default float64 if x64 is enabled.
    breakdown_tol: beta below breakdown_tol * (running max of |alpha|, beta) stops the
      recursion; default eps^(2/3) of the operator's dtype (3.7e-11 in float64, 2.4e-5 in
      float32: above the rounding noise of an exhausted Krylov space).

  Returns:
    A LanczosResult.
  """
  if reorth not in REORTH:
    raise ValueError(f"reorth must be one of {REORTH}, got {reorth!r}")
  check_counts(num_steps=num_steps)
  dtype = lanczos_dtype(dtype)
  in_dtypes = [x.dtype for x in jax.tree.leaves(v0)]
  if breakdown_tol is None:
    breakdown_tol = float(max(jnp.finfo(d).eps for d in in_dtypes)) ** (2 / 3)
  treedef = jax.tree.structure(v0)
  to_model = lambda v: jax.tree.unflatten(
      treedef, [x.astype(d) for x, d in zip(jax.tree.leaves(v), in_dtypes)])
  v = jax.tree.map(lambda x: x.astype(dtype), v0)
  v = jax.tree.map(lambda x: x / jnp.sqrt(optax.tree.vdot(v, v)), v)
  zeros = jax.tree.map(jnp.zeros_like, v)
  basis = (jax.tree.map(lambda x: jnp.zeros((num_steps, *x.shape), dtype), v)
           if reorth == "full" else None)

  def step(j, carry):
    v_prev, v, beta, alive, scale, alphas, betas, valid, basis = carry
    w = jax.tree.map(lambda x: x.astype(dtype), matvec(to_model(v)))
    w = optax.tree.add_scale(w, -beta, v_prev)
    alpha = optax.tree.vdot(w, v)
    w = optax.tree.add_scale(w, -alpha, v)
    if basis is not None:
      basis = jax.tree.map(lambda b, x: b.at[j].set(x), basis, v)
      w = _reorthogonalise(basis, w)
    beta_new = jnp.sqrt(optax.tree.vdot(w, w))
    scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta_new))
    ok = alive & (beta_new > breakdown_tol * scale)
    alphas = alphas.at[j].set(jnp.where(alive, alpha, 0))
    betas = betas.at[j].set(jnp.where(ok, beta_new, 0))
    valid = valid.at[j].set(alive)
    safe = jnp.where(ok, beta_new, 1)
    v_next = jax.tree.map(lambda x: jnp.where(ok, x / safe, 0), w)
    return v, v_next, jnp.where(ok, beta_new, 0), ok, scale, alphas, betas, valid, basis

  scalars = jnp.zeros((num_steps,), dtype)
  carry = (zeros, v, jnp.zeros((), dtype), jnp.array(True), jnp.zeros((), dtype), scalars,
           scalars, jnp.zeros((num_steps,), bool), basis)
  carry = jax.lax.fori_loop(0, num_steps, step, carry)
  return LanczosResult(carry[5], carry[6], carry[7])


def lanczos_probes(matvec: Callable, probes, num_steps: int, reorth: str = "none", dtype=None,
                   sequential: bool = False) -> LanczosResult:
  """Runs Lanczos from several start vectors at once.

  Args:
    matvec: as in `lanczos`.
    probes: a pytree like the start vector with a leading probe axis.
    num_steps: Lanczos steps per probe.
    reorth: "none" or "full".
    dtype: Lanczos dtype (default float64 with x64).
    sequential: False vmaps the probes (one batched operator call per step); True runs them one
      after the other with `lax.map` (memory of one probe).

  Returns:
    A LanczosResult with a leading probe axis.
  """
  run = lambda v0: lanczos(matvec, v0, num_steps, reorth, dtype)
  return jax.lax.map(run, probes) if sequential else jax.vmap(run)(probes)


def ritz(result: LanczosResult) -> tuple[jax.Array, jax.Array]:
  """Ritz values (Gauss quadrature nodes) and weights (first row of T's eigenvectors, squared).

  Steps after a breakdown get the value alphas[0] (inside the spectrum's range) and zero weight:
  T is block diagonal there and e_1 lies in the valid block.

  Args:
    result: a LanczosResult, optionally with leading batch axes.

  Returns:
    (nodes, weights), each [..., k], weights summing to 1 over the last axis.
  """
  if result.alphas.ndim > 1:
    return jax.vmap(ritz)(result)
  alphas = jnp.where(result.valid, result.alphas, result.alphas[0])
  t = jnp.diag(alphas) + jnp.diag(result.betas[:-1], 1) + jnp.diag(result.betas[:-1], -1)
  nodes, vectors = jnp.linalg.eigh(t)
  return nodes, vectors[0] ** 2
