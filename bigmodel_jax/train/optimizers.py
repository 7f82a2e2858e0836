"""Turns the `opt` section of a config into an optax transformation.

One registry maps an optimizer name to a builder; this package's algorithms are registered at the
bottom of this file (their own modules stay plain optax and know nothing of configs), and users may
`register` their own. Every experiment (and experiments.memory) accepts every optimizer by name:
`--config.opt.name=adamw`. The factory adds what all optimizers share: the warmup + cosine
learning-rate schedule and global-norm clipping. The builders are for this project's models:
their stacked layers (`models.LAYER_AXES`) are declared to the partition and the decay mask, as the
trainers hold the parameters as pure dicts.
"""

import functools
import json
import math
import warnings
from collections.abc import Callable

import ml_collections
import optax

from bigmodel_jax import blocks
from bigmodel_jax.hessian.measured_partition import partition_of_report
from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.optim.adam_mini import adam_mini
from bigmodel_jax.optim.l2sp import add_l2_towards_init
from bigmodel_jax.optim.lomo import adalomo, lomo, stacked_layers
from bigmodel_jax.optim.mofo import mofo
from bigmodel_jax.optim.weight_decay import decay_mask as _rank_decay_mask

decay_mask = functools.partial(_rank_decay_mask, layer_axes=LAYER_AXES)

OptimizerBuilder = Callable[
    [ml_collections.ConfigDict, optax.Schedule], optax.GradientTransformation]

_REGISTRY: dict[str, OptimizerBuilder] = {}


def register(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
  """Decorator that registers an optimizer builder under `name`.

  Args:
    name: the value of `opt.name` that selects this optimizer.

  Returns:
    The decorator; the builder takes (opt_config, learning_rate_schedule).
  """

  def decorator(builder: OptimizerBuilder) -> OptimizerBuilder:
    if name in _REGISTRY:
      raise ValueError(f"optimizer {name!r} is registered twice")
    _REGISTRY[name] = builder
    return builder

  return decorator


def available_optimizers() -> list[str]:
  """Returns the sorted names accepted by `opt.name`."""
  return sorted(_REGISTRY)


def make_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `opt.lr`, then cosine decay to `opt.lr * opt.min_lr_ratio` ("cosine"), or
  constant `opt.lr` ("constant"), or linear warmup then constant ("warmup_constant": a run's
  first steps do not depend on `total_steps`, so runs of several lengths share them).

  Args:
    opt: the optimizer config (`lr`, `warmup_steps`, `schedule`, `min_lr_ratio`).
    total_steps: number of optimizer steps of the run.

  Returns:
    An optax schedule.
  """
  if opt.schedule == "constant":
    return optax.constant_schedule(opt.lr)
  if opt.schedule == "warmup_constant":
    return optax.warmup_constant_schedule(0.0, opt.lr, max(opt.warmup_steps, 1))
  if opt.schedule != "cosine":
    raise ValueError(f"opt.schedule must be 'cosine', 'constant' or 'warmup_constant', got "
                     f"{opt.schedule!r}")
  if opt.warmup_steps >= total_steps:
    raise ValueError(
        f"opt.warmup_steps ({opt.warmup_steps}) must be smaller than train.steps ({total_steps})"
    )
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=opt.lr,
      warmup_steps=opt.warmup_steps,
      decay_steps=total_steps,
      end_value=opt.lr * opt.min_lr_ratio,
  )


def opt_with(opt: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """A copy of the `opt` section with some values replaced; the section itself is left as it is.

  Args:
    opt: the `opt` section of an experiment config (possibly locked).
    **overrides: the keys to replace, e.g. name="sgd".

  Returns:
    The modified copy.
  """
  copy = opt.copy_and_resolve_references()
  copy.update(overrides)
  return copy


def make_optimizer(
    opt: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer named by `opt.name`, with schedule and clipping.

  Args:
    opt: the `opt` section of an experiment config.
    total_steps: number of optimizer steps (for the schedule).

  Returns:
    (transformation, learning-rate schedule).

  Raises:
    ValueError: naming `opt.name` when the optimizer is unknown.
  """
  names = available_optimizers()
  if opt.name not in _REGISTRY:
    raise ValueError(f"opt.name={opt.name!r} is not a known optimizer; choose one of {names}")
  schedule = make_schedule(opt, total_steps)
  transform = _REGISTRY[opt.name](opt, schedule)
  if opt.max_grad_norm and opt.max_grad_norm > 0:
    transform = optax.chain(optax.clip_by_global_norm(opt.max_grad_norm), transform)
  return transform, schedule


class AdamBetaWarning(UserWarning):
  """Adam's decays lie outside the region where it provably converges (b1 < sqrt(b2))."""


def _warn_outside_convergence_region(opt: ml_collections.ConfigDict) -> None:
  """Checks an Adam-family optimizer's decays; warns when b1 >= sqrt(b2).

  Zhang et al., "Adam Can Converge Without Any Modification On Update Rules" (NeurIPS 2022):
  Adam converges (to a neighbourhood of critical points whose size scales with the gradient
  noise) when 0 <= b1 < sqrt(b2) < 1 and b2 is large enough for the problem; outside, it can
  diverge. The threshold on b2 depends on the problem (it grows as the batch shrinks), so only
  the b1 < sqrt(b2) side is checked.

  Raises:
    ValueError: naming `opt.b1` / `opt.b2` when one is outside [0, 1).
  """
  for key in ("b1", "b2"):
    if not 0.0 <= opt[key] < 1.0:
      raise ValueError(f"opt.{key}={opt[key]} must be in [0, 1) for opt.name={opt.name!r}")
  if opt.b1 >= math.sqrt(opt.b2):
    warnings.warn(
        f"opt.b1={opt.b1} >= sqrt(opt.b2)={math.sqrt(opt.b2):.4f}: outside the region "
        "0 <= b1 < sqrt(b2) < 1 where Adam provably converges (Zhang et al., NeurIPS 2022); "
        "raise opt.b2 (more for smaller batches) or lower opt.b1", AdamBetaWarning,
        stacklevel=2)


@register("adamw")
def _adamw(opt, lr):
  _warn_outside_convergence_region(opt)
  return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=decay_mask)


@register("sgd")
def _sgd(opt, lr):
  return optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
      optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov),
  )


@register("adafactor")
def _adafactor(opt, lr):
  return optax.adafactor(lr, weight_decay_rate=opt.weight_decay or None,
                         weight_decay_mask=decay_mask)


@register("lion")
def _lion(opt, lr):
  return optax.lion(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=decay_mask)


@register("sophia")
def _sophia(opt, lr):
  # optax.contrib.sophia (Liu et al., 2023) needs the loss (`obj_fn`) for its Hutchinson
  # estimate of the Hessian diagonal: the project's train step passes it as an extra argument.
  _warn_outside_convergence_region(opt)
  return optax.contrib.sophia(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                              weight_decay=opt.weight_decay, weight_decay_mask=decay_mask)


def _measured_partition(opt: ml_collections.ConfigDict):
  """The partition of `opt.partition_report` (a `hessian.propose_partition` report saved as
  JSON, e.g. experiments.measured_partition's partition_report_cnn.json), or None (the
  Transformer rules) when it is ""."""
  if not opt.partition_report:
    return None
  try:
    with open(opt.partition_report) as f:
      report = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"opt.partition_report: cannot read {opt.partition_report!r}: {e}") from e
  return partition_of_report(report)


@register("adam_mini")
def _adam_mini(opt, lr):
  _warn_outside_convergence_region(opt)
  return adam_mini(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                   weight_decay_mask=decay_mask, partition=_measured_partition(opt),
                   layer_axes=LAYER_AXES)


@register("adam_mini_per_tensor")
def _adam_mini_per_tensor(opt, lr):
  # The ablation of the paper: one block per (per-layer) tensor, unstable on GPT-2.
  _warn_outside_convergence_region(opt)
  return adam_mini(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                   weight_decay_mask=decay_mask, partition=blocks.per_tensor,
                   layer_axes=LAYER_AXES)


@register("mofo")
def _mofo(opt, lr):
  _warn_outside_convergence_region(opt)
  return mofo(lr, fraction=opt.fraction, b1=opt.b1, b2=opt.b2, eps=opt.eps,
              weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
              layer_axes=LAYER_AXES)


@register("adamw_l2sp")
def _adamw_l2sp(opt, lr):
  # The pull is added after the factory's gradient clipping, before Adam's normalisation.
  return optax.chain(add_l2_towards_init(opt.l2sp), _adamw(opt, lr))


@register("lomo")
def _lomo(opt, lr):
  # The unfused reference; bigmodel_jax.train.fused_step runs the same transform layer by layer.
  return lomo(lr, weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
              clip_grad_value=opt.clip_grad_value or None)


@register("adalomo")
def _adalomo(opt, lr):
  return adalomo(lr, decay_rate=opt.adalomo_decay_rate,
                 clip_threshold=opt.adalomo_clip_threshold,
                 param_scale_eps=opt.adalomo_param_scale_eps,
                 weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
                 layer_axes=stacked_layers)
