"""Block-Hessian diagnostics: HVPs, Lanczos, SLQ block spectra, JS heterogeneity, a monitor.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024).
"""

from bigmodel_jax.hessian.exact import block_hessian, block_indices, eigenvalues, hessian_matrix
from bigmodel_jax.hessian.hvp import (
    Block,
    block_hvp,
    block_mask,
    hvp,
    leaf_hvp,
    list_blocks,
    mean_loss,
    select_blocks,
)
from bigmodel_jax.hessian.lanczos import LanczosResult, lanczos, lanczos_probes, ritz
from bigmodel_jax.hessian.measured_partition import propose_partition
from bigmodel_jax.hessian.monitor import (
    HessianMonitorState,
    block_top_eigenvalues,
    hessian_monitor,
    monitor_metrics,
    top_eigenvalues,
)
from bigmodel_jax.hessian.spectrum import (
    Grid,
    Spectrum,
    block_spectra,
    density,
    exact_spectrum,
    heterogeneity,
    js0,
    js_distance,
    js_matrix,
    make_grid,
    model_spectrum,
    top_eigenvalue,
)

__all__ = [
    "Block", "Grid", "HessianMonitorState", "LanczosResult", "Spectrum", "block_hessian",
    "block_hvp", "block_indices", "block_mask", "block_spectra", "block_top_eigenvalues",
    "density", "eigenvalues", "exact_spectrum", "hessian_matrix", "hessian_monitor",
    "heterogeneity", "hvp", "js0", "js_distance", "js_matrix", "lanczos", "lanczos_probes",
    "leaf_hvp", "list_blocks", "make_grid", "mean_loss", "model_spectrum", "monitor_metrics",
    "propose_partition", "ritz", "select_blocks", "top_eigenvalue", "top_eigenvalues",
]
