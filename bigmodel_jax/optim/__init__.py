"""Optimizers as optax transformations (one file per algorithm) and the config factory."""

from bigmodel_jax.optim.adam_mini import AdamMiniState, adam_mini, scale_by_adam_mini

__all__ = ["AdamMiniState", "adam_mini", "scale_by_adam_mini"]
