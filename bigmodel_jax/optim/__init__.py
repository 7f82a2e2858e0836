"""Optimizers as optax transformations, one file per algorithm (the config factory that maps
`opt.name` to them is bigmodel_jax/train/optimizers.py: nothing below train/ reads a config)."""

from bigmodel_jax.optim.adam_mini import AdamMiniState, adam_mini, scale_by_adam_mini
from bigmodel_jax.optim.l2sp import L2TowardsInitState, add_l2_towards_init
from bigmodel_jax.optim.lomo import (
    AdaLomoState,
    LomoState,
    adalomo,
    lomo,
    scale_by_adalomo,
    scale_by_lomo,
    scale_by_param_rms,
    stacked_layers,
)
from bigmodel_jax.optim.mofo import MoFOState, mofo, scale_by_mofo

__all__ = [
    "AdaLomoState",
    "AdamMiniState",
    "L2TowardsInitState",
    "LomoState",
    "MoFOState",
    "adalomo",
    "adam_mini",
    "add_l2_towards_init",
    "lomo",
    "mofo",
    "scale_by_adalomo",
    "scale_by_adam_mini",
    "scale_by_lomo",
    "scale_by_mofo",
    "scale_by_param_rms",
    "stacked_layers",
]
