"""The trainer option `train.hessian_every`: per-block top Hessian eigenvalues during training.

The option chains `hessian.hessian_monitor` in front of the optimizer; the train step hands it
the batch's loss as optax's extra argument `value_fn`, so the eigenvalues are computed inside
the jitted step at the pre-update parameters, every `train.hessian_every` updates, and the loop
reads them from the optimizer state as metrics "hessian/top_eig/<block>".
Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024).
"""

import jax
import ml_collections
import optax

from bigmodel_jax import hessian
from bigmodel_jax.models import LAYER_AXES


def with_hessian_monitor(optimizer: optax.GradientTransformation,
                         train: ml_collections.ConfigDict, abstract_params, seed: int
                         ) -> optax.GradientTransformationExtraArgs:
  """`optimizer` with the monitor of `train.hessian_*` in front.

  Args:
    optimizer: the run's optimizer.
    train: the `train` config section (hessian_every > 0, hessian_blocks, hessian_lanczos_steps).
    abstract_params: the parameters (arrays or ShapeDtypeStructs), to check the block selection.
    seed: the run's seed (of the Lanczos probes).

  Returns:
    optax.chain(monitor, optimizer); its state's first element is the monitor's.

  Raises:
    ValueError: naming train.hessian_blocks when it selects no block.
  """
  patterns = tuple(train.hessian_blocks) or None
  try:
    hessian.select_blocks(hessian.list_blocks(abstract_params, layer_axes=LAYER_AXES),
                          patterns or (), None)
  except ValueError as e:
    raise ValueError(f"train.hessian_blocks: {e}") from e
  monitor = hessian.hessian_monitor(every=train.hessian_every, patterns=patterns,
                                    layer_axes=LAYER_AXES, num_steps=train.hessian_lanczos_steps,
                                    seed=seed)
  return optax.chain(monitor, optimizer)


def hessian_metrics(opt_state, params, train: ml_collections.ConfigDict) -> dict[str, float]:
  """The monitor's latest values in the state of `with_hessian_monitor`'s optimizer.

  Args:
    opt_state: the optimizer state.
    params: the parameters (for the block names).
    train: the `train` config section.

  Returns:
    {"hessian/top_eig/<block>": float}.
  """
  return hessian.monitor_metrics(jax.device_get(opt_state[0]), params, layer_axes=LAYER_AXES,
                                 patterns=tuple(train.hessian_blocks) or None)
