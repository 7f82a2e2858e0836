"""Block-diagonal quadratics (Zhang et al., NeurIPS 2024, Sec. 4): `experiments/hessian.py`.

  python -m experiments.hessian --config=configs/hessian_quadratic.py --workdir=/tmp/hq

f(w) = 1/2 w'Hw - h'w with block-diagonal H (random rotations inside blocks), condition number
`kappa` in every case; heterogeneous blocks (each block its own eigenvalue range) vs homogeneous
(every block spans the whole range). GD at its best step size vs Adam and Adam-mini at their
best learning rates: iterations to reach (f - f*) / (f(w0) - f*) <= target.
"""

import ml_collections


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The quadratic config.

  Args:
    settings: "full" or "small".

  Returns:
    The config; every key is declared here.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/hessian_quadratic.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  c = ml_collections.ConfigDict()
  c.experiment = "quadratic"
  c.seed = 0
  c.kappa = 5000.0
  c.block_dim = 100
  # Eigenvalue ranges per block, as fractions (lo, hi) of log10(kappa): block l's eigenvalues are
  # log-uniform in [kappa^lo, kappa^hi]; the extremes 1 and kappa are always present.
  c.heterogeneous = ((0.0, 0.27), (0.36, 0.63), (0.73, 1.0))
  c.homogeneous = ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0))
  c.target = 1e-4
  c.max_iters = 40000
  c.gd_step_factors = (0.5, 1.0, 1.5, 1.9, 1.99)  # step = factor / lambda_max
  c.adam_lrs = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.log_every = 100
  if settings == "small":
    c.block_dim = 8
    c.max_iters = 200
    c.target = 1e-1
    c.adam_lrs = (1e-2, 1e-1)
    c.log_every = 50
  return c
