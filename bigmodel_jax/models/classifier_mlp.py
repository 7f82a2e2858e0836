"""A small MLP image classifier (Flax NNX) for the block-Hessian comparison.

Not the Transformer's MLP block (models/mlp.py): this is a whole model on flattened images.
Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024).
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class ClassifierMLP(nnx.Module):
  """Flattened image -> Linear + ReLU layers -> linear head.

  Parameters: hidden{i}/kernel, hidden{i}/bias, head/kernel, head/bias (deterministic forward).

  Args:
    hidden: widths of the hidden layers.
    num_classes: number of classes.
    num_inputs: flattened image size.
    rngs: random streams.
  """

  def __init__(self, hidden: Sequence[int] = (128, 64, 64), num_classes: int = 10,
               num_inputs: int = 64, *, rngs: nnx.Rngs):
    self.hidden = nnx.List()
    for width in hidden:
      self.hidden.append(nnx.Linear(num_inputs, width, rngs=rngs))
      num_inputs = width
    self.head = nnx.Linear(num_inputs, num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Logits [batch, num_classes] of images [batch, ...]."""
    x = jnp.reshape(images, (images.shape[0], -1))
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.head(x)


@dataclasses.dataclass(frozen=True)
class ClassifierMLPConfig:
  """The MLP's configuration (the trainer's model config: it identifies checkpoints)."""

  hidden: tuple[int, ...] = (128, 64, 64)
  num_classes: int = 10
  num_inputs: int = 64


def create_classifier_mlp(config: ClassifierMLPConfig, rngs: nnx.Rngs) -> ClassifierMLP:
  """The MLP of `config` (a `Task`'s create_model)."""
  return ClassifierMLP(config.hidden, config.num_classes, config.num_inputs, rngs=rngs)
