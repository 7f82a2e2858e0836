"""A small CNN image classifier (Flax NNX), the CNN side of the block-Hessian comparison.

Reference: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024):
CNNs have homogeneous block spectra; Transformers do not.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class CNN(nnx.Module):
  """3x3 convolutions with ReLU (average pooling after every second), then a linear head.

  Parameters: conv{i}/kernel [3, 3, c_in, c_out], conv{i}/bias, head/kernel, head/bias. No
  normalisation layers and no dropout: the forward pass is deterministic (Hessians need that).

  Args:
    channels: output channels of each convolution.
    num_classes: number of classes.
    image_shape: (height, width, channels) of the inputs.
    rngs: random streams.
  """

  def __init__(self, channels: Sequence[int] = (16, 16, 32, 32), num_classes: int = 10,
               image_shape: tuple[int, int, int] = (8, 8, 1), *, rngs: nnx.Rngs):
    height, width, c_in = image_shape
    self.convs = nnx.List()
    for c_out in channels:
      self.convs.append(nnx.Conv(c_in, c_out, (3, 3), padding="SAME", rngs=rngs))
      c_in = c_out
    pools = len(channels) // 2
    features = (height >> pools) * (width >> pools) * c_in
    self.head = nnx.Linear(features, num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Logits [batch, num_classes] of images [batch, height, width, channels]."""
    x = images
    for i, conv in enumerate(self.convs):
      x = jax.nn.relu(conv(x))
      if i % 2 == 1:
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    return self.head(jnp.reshape(x, (x.shape[0], -1)))


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """The CNN's configuration (the trainer's model config: it identifies checkpoints)."""

  channels: tuple[int, ...] = (16, 16, 32, 32)
  num_classes: int = 10
  image_shape: tuple[int, int, int] = (8, 8, 1)


def create_cnn(config: CNNConfig, rngs: nnx.Rngs) -> CNN:
  """The CNN of `config` (a `Task`'s create_model)."""
  return CNN(config.channels, config.num_classes, config.image_shape, rngs=rngs)
