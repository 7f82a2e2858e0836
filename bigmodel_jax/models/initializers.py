"""Parameter initialisers annotated with logical axis names.

GPT-2 style: normal(0.02) for matrices and embeddings, with the projections that write into the
residual stream (attention out, MLP down) scaled by 1 / sqrt(2 * num_layers); zeros for biases and
ones for norm scales. Every initialiser carries the logical axis names of its parameter, from
which the trainer derives the sharding.
"""

import math
from collections.abc import Sequence

from flax import nnx

INIT_STDDEV = 0.02

AxisNames = Sequence[str | None]


def normal(names: AxisNames, stddev: float = INIT_STDDEV) -> nnx.Initializer:
  """Returns a normal(stddev) initialiser whose parameter is annotated with `names`."""
  return nnx.with_partitioning(nnx.initializers.normal(stddev), tuple(names))


def zeros(names: AxisNames) -> nnx.Initializer:
  """Returns a zeros initialiser whose parameter is annotated with `names`."""
  return nnx.with_partitioning(nnx.initializers.zeros_init(), tuple(names))


def ones(names: AxisNames) -> nnx.Initializer:
  """Returns a ones initialiser whose parameter is annotated with `names`."""
  return nnx.with_partitioning(nnx.initializers.ones_init(), tuple(names))


def residual_stddev(num_layers: int) -> float:
  """The init scale of projections that write into the residual stream.

  Args:
    num_layers: number of transformer blocks (each adds two residual branches).

  Returns:
    INIT_STDDEV / sqrt(2 * num_layers).
  """
  return INIT_STDDEV / math.sqrt(2 * num_layers)
