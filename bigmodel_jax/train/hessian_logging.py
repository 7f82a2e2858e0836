"""The trainer option that logs per-block top Hessian eigenvalues during training.

Every `train.hessian_every` steps the loop calls the function made here on the current batch;
it runs a short Lanczos per selected block (bigmodel_jax.hessian) and returns metrics named
"hessian/top_eig/<block>". It is jitted once, so the cost is the HVPs alone.
Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024).
"""

from collections.abc import Callable, Sequence

import jax

from bigmodel_jax import hessian
from bigmodel_jax.models import LAYER_AXES


def make_block_eigenvalue_logger(loss_fn: Callable, abstract_params, *, seed: int,
                                 num_steps: int, patterns: Sequence[str] = (),
                                 layers: Sequence[int] | None = None) -> Callable:
  """A function (params, batch, step) -> {"hessian/top_eig/<block>": float}.

  Args:
    loss_fn: loss_fn(params, batch) -> (loss_sum, weight_sum), as in train/step.py.
    abstract_params: the parameters (arrays or ShapeDtypeStructs), for the block list.
    seed: the run's seed; the probe of step s is drawn from fold_in(seed, s).
    num_steps: Lanczos steps per block.
    patterns: keep blocks whose path ends with one of these; () keeps every block.
    layers: keep only these layers of stacked leaves (None: all).

  Returns:
    The logger.
  """
  blocks = hessian.list_blocks(abstract_params, layer_axes=LAYER_AXES)
  if patterns:
    try:
      blocks = hessian.select_blocks(blocks, patterns, layers)
    except ValueError as e:
      raise ValueError(f"train.hessian_blocks: {e}") from e

  @jax.jit
  def top_eigenvalues(params, batch, key):
    def mean_loss(p):
      loss_sum, weight_sum = loss_fn(p, batch)
      return loss_sum / weight_sum

    return hessian.top_eigenvalues(mean_loss, params, blocks, key, num_steps)

  def log(params, batch, step: int) -> dict[str, float]:
    key = jax.random.fold_in(jax.random.key(seed), step)
    values = jax.device_get(top_eigenvalues(params, batch, key))
    return {f"{hessian.monitor.PREFIX}{b.name}": float(v) for b, v in zip(blocks, values)}

  return log
