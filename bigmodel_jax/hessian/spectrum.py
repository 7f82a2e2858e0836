"""Stochastic Lanczos quadrature (SLQ) spectral densities per block, and JS distances.

A spectrum is the Ritz values (nodes) and quadrature weights of several Gaussian probes. Densities
of all blocks (and of the whole model) are evaluated on one common grid with the authors'
Gaussian smoothing (variance sigma2 * max(1, grid range), as in PyHessian's `density_generate`),
normalised to integrate to one. The Jensen-Shannon distance comes in two variants:

* "bounded": densities turned into probability vectors over the grid (p * dx); the distance
  sqrt(JSD) with natural logarithms lies in [0, sqrt(ln 2)].
* "paper": the same formula on the raw density values (integrating to one, summing to 1 / dx);
  it equals bounded * sqrt(1 / dx) and reproduces the paper's JS0 values above sqrt(ln 2).

JS0 is the mean over block pairs i < j. Every output records the grid and sigma2.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024),
Sec. 3 and App.; Ubaru, Chen & Saad (2017) for SLQ.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.hessian.hvp import Block, block_hvp, block_mask, hvp
from bigmodel_jax.hessian.lanczos import check_counts, lanczos_probes, ritz

JS_VARIANTS = ("bounded", "paper")


class Spectrum(NamedTuple):
  """An SLQ spectrum: nodes and weights, [num_probes, num_steps] each (numpy float64)."""

  nodes: np.ndarray
  weights: np.ndarray


class Grid(NamedTuple):
  """The common evaluation grid and smoothing of a set of densities."""

  points: np.ndarray
  sigma2: float

  @property
  def dx(self) -> float:
    """Grid spacing."""
    return float(self.points[1] - self.points[0])

  @property
  def variance(self) -> float:
    """The Gaussian kernel's variance: sigma2 * max(1, range) (the authors' convention)."""
    return self.sigma2 * max(1.0, float(self.points[-1] - self.points[0]))

  def describe(self) -> dict:
    """JSON-ready record of the grid and smoothing."""
    return {"lo": float(self.points[0]), "hi": float(self.points[-1]),
            "num_points": len(self.points), "dx": self.dx, "sigma2": self.sigma2,
            "kernel_variance": self.variance}


def _spectrum(nodes, weights) -> Spectrum:
  return Spectrum(np.asarray(nodes, np.float64), np.asarray(weights, np.float64))


def gaussian_probes(key: jax.Array, like, num_probes: int, mask=None):
  """`num_probes` standard Gaussian vectors shaped like `like` (a pytree), optionally masked."""
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, len(leaves))
  out = [jax.random.normal(k, (num_probes, *x.shape), x.dtype) for k, x in zip(keys, leaves)]
  if mask is not None:
    out = [x * m for x, m in zip(out, jax.tree.leaves(mask))]
  return jax.tree.unflatten(treedef, out)


def _make_block_slq(loss_fn, block: Block, num_probes, num_steps, reorth, sequential,
                    dtype, mode):
  """A jitted (params, key, index) -> (nodes, weights) for every block of one leaf."""

  def run(params, key, index):
    leaf = jax.tree.leaves(params)[block.leaf_index]
    mask = block_mask(block, index, leaf.dtype)
    probes = gaussian_probes(key, leaf, num_probes, mask)
    matvec = lambda v: block_hvp(loss_fn, params, block, v, index, mode)
    result = lanczos_probes(matvec, probes, num_steps, reorth, dtype, sequential)
    return ritz(result)

  return jax.jit(run)


def block_spectra(loss_fn: Callable, params, blocks: Sequence[Block], key: jax.Array,
                  num_probes: int = 10, num_steps: int = 100, reorth: str = "none",
                  sequential: bool = False, dtype=None, mode: str = "auto",
                  callback: Callable | None = None) -> dict[str, Spectrum]:
  """SLQ spectra of the block-diagonal Hessian blocks H_bb (the paper's defaults).

  One compiled function serves every block of a leaf (the block index is traced).

  Args:
    loss_fn: loss_fn(params) -> scalar (deterministic; see `hvp.mean_loss`).
    params: the parameters.
    blocks: blocks from `hvp.list_blocks` / `hvp.select_blocks`.
    key: PRNG key; block i uses fold_in(key, i).
    num_probes: Gaussian probes per block (paper: 10).
    num_steps: Lanczos steps (paper: 100).
    reorth: "none" (paper) or "full".
    sequential: run probes one after the other instead of vmapped.
    dtype: Lanczos dtype (default float64 with x64 enabled).
    mode: HVP mode (see `hvp.hvp`).
    callback: called as callback(i, block) after each block (e.g. a progress bar).

  Returns:
    block name -> Spectrum, in the order of `blocks`.
  """
  check_counts(num_probes=num_probes, num_steps=num_steps)
  compiled, out = {}, {}
  for i, block in enumerate(blocks):
    if block.compile_key not in compiled:
      compiled[block.compile_key] = _make_block_slq(loss_fn, block, num_probes, num_steps, reorth,
                                                   sequential, dtype, mode)
    index = jnp.asarray(block.index, jnp.int32)
    nodes, weights = compiled[block.compile_key](params, jax.random.fold_in(key, i), index)
    out[block.name] = _spectrum(nodes, weights)
    if callback is not None:
      callback(i, block)
  return out


def model_spectrum(loss_fn: Callable, params, key: jax.Array, num_probes: int = 10,
                   num_steps: int = 100, reorth: str = "none", sequential: bool = False,
                   dtype=None, mode: str = "auto") -> Spectrum:
  """SLQ spectrum of the whole-model Hessian (probes are pytrees like `params`).

  Args:
    loss_fn: loss_fn(params) -> scalar.
    params: the parameters (may be sharded; Lanczos vectors inherit the shardings).
    key: PRNG key.
    num_probes: Gaussian probes.
    num_steps: Lanczos steps.
    reorth: "none" or "full".
    sequential: run probes one after the other instead of vmapped.
    dtype: Lanczos dtype.
    mode: HVP mode.

  Returns:
    The Spectrum.
  """
  check_counts(num_probes=num_probes, num_steps=num_steps)

  @jax.jit
  def run(params, key):
    probes = gaussian_probes(key, params, num_probes)
    matvec = lambda v: hvp(loss_fn, params, v, mode)
    result = lanczos_probes(matvec, probes, num_steps, reorth, dtype, sequential)
    return ritz(result)

  return _spectrum(*run(params, key))


def top_eigenvalue(spectrum: Spectrum) -> float:
  """The largest Ritz value (Lanczos converges to the extremes first)."""
  return float(np.max(spectrum.nodes))


def make_grid(spectra: Sequence[Spectrum], num_points: int = 10000, sigma2: float = 1e-5,
              overhead: float = 0.01) -> Grid:
  """One common grid covering every Ritz value with positive weight, padded by `overhead`.

  Args:
    spectra: the spectra that will share the grid (blocks and whole model).
    num_points: grid size (authors: 10000 bins).
    sigma2: smoothing (authors: 1e-5); the kernel variance is sigma2 * max(1, range).
    overhead: padding on both sides (authors: 0.01).

  Returns:
    The Grid.
  """
  used = np.concatenate([s.nodes[s.weights > 1e-12] for s in spectra])
  return Grid(np.linspace(used.min() - overhead, used.max() + overhead, num_points), sigma2)


def density(spectrum: Spectrum, grid: Grid) -> np.ndarray:
  """The smoothed SLQ density on the grid: mean over probes of sum_j w_j N(x; node_j, var).

  Args:
    spectrum: nodes and weights [num_probes, k] (exact spectra: one probe, weights 1 / n).
    grid: the common grid.

  Returns:
    Density values on grid.points, normalised so that sum(density) * dx = 1.
  """
  x = grid.points[:, None, None]
  var = grid.variance
  kernel = np.exp(-(x - spectrum.nodes[None]) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var)
  rho = np.mean(np.sum(kernel * spectrum.weights[None], axis=-1), axis=-1)
  return rho / (np.sum(rho) * grid.dx)


def exact_spectrum(eigenvalues: np.ndarray) -> Spectrum:
  """An exact spectrum as a one-probe Spectrum with uniform weights."""
  eigenvalues = np.asarray(eigenvalues, np.float64).ravel()
  return Spectrum(eigenvalues[None], np.full((1, eigenvalues.size), 1 / eigenvalues.size))


def _jsd(p: np.ndarray, q: np.ndarray) -> float:
  """0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2, as p log(2p / (p + q)): the ratio stays
  in (0, 2] even where p and q are subnormal (0.5 * (p + q) would underflow to 0)."""
  total = p + q
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    kl_p = np.where(p > 0, p * np.log(2 * p / total), 0.0)
    kl_q = np.where(q > 0, q * np.log(2 * q / total), 0.0)
  return max(0.0, 0.5 * float(np.sum(kl_p) + np.sum(kl_q)))


def js_distance(p: np.ndarray, q: np.ndarray, dx: float, variant: str = "bounded") -> float:
  """Jensen-Shannon distance between two densities on the same grid.

  Args:
    p: density values (integrating to one on the grid).
    q: density values.
    dx: grid spacing.
    variant: "bounded" (probability vectors; <= sqrt(ln 2)) or "paper" (raw density values;
      = bounded * sqrt(1 / dx), the scale of the paper's JS0).

  Returns:
    The distance sqrt(JSD), natural logarithms.
  """
  if variant not in JS_VARIANTS:
    raise ValueError(f"JS variant must be one of {JS_VARIANTS}, got {variant!r}")
  if variant == "bounded":
    p, q = p * dx / np.sum(p * dx), q * dx / np.sum(q * dx)
  return float(np.sqrt(_jsd(p, q)))


def js_matrix(densities: Sequence[np.ndarray], dx: float, variant: str = "bounded") -> np.ndarray:
  """The symmetric matrix of pairwise JS distances (zero diagonal)."""
  n = len(densities)
  out = np.zeros((n, n))
  for i in range(n):
    for j in range(i + 1, n):
      out[i, j] = out[j, i] = js_distance(densities[i], densities[j], dx, variant)
  return out


def js0(matrix: np.ndarray) -> float:
  """JS0: the mean JS distance over block pairs i < j."""
  n = matrix.shape[0]
  return float(np.mean(matrix[np.triu_indices(n, 1)])) if n > 1 else 0.0


def heterogeneity(spectra: dict[str, Spectrum], grid: Grid | None = None) -> dict:
  """Densities on one grid, JS matrices and JS0 in both variants, with grid and sigma2.

  Args:
    spectra: block name -> Spectrum (the blocks compared).
    grid: the common grid; default `make_grid(spectra)`.

  Returns:
    {"grid": {...}, "names": [...], "densities": [n, points], "js": {variant: matrix},
     "js0": {variant: float}}.
  """
  grid = make_grid(list(spectra.values())) if grid is None else grid
  dens = [density(s, grid) for s in spectra.values()]
  js = {v: js_matrix(dens, grid.dx, v) for v in JS_VARIANTS}
  return {"grid": grid.describe(), "names": list(spectra), "densities": np.stack(dens),
          "js": js, "js0": {v: js0(m) for v, m in js.items()}}
