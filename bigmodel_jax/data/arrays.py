"""In-memory labelled arrays as training and evaluation batches (e.g. images and their classes).

Batches are {"inputs", "targets", "weights"} host numpy dicts, as the trainer's tasks take them:
`ShuffledBatches` draws training batches from a new permutation every epoch and can be
checkpointed (its state is the epoch and the position in it); `fixed_batches` splits a set into
batches of one size, the last padded with rows of weight 0 so that every example counts once.
"""

import numpy as np


def _batch(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict:
  return {"inputs": inputs, "targets": targets, "weights": weights.astype(np.float32)}


class ShuffledBatches:
  """Endless minibatches of (inputs, targets), reshuffled every epoch; checkpointable.

  Every batch holds `batch_size` distinct examples; an epoch's leftover (fewer than a batch)
  is dropped. Epoch e's order is a permutation seeded by (seed, e), so a restored iterator
  continues exactly.

  Args:
    inputs: [n, ...] examples.
    targets: [n, ...] labels.
    batch_size: examples per batch (at most n).
    seed: seed of the permutations.
  """

  def __init__(self, inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    if not 0 < batch_size <= len(targets):
      raise ValueError(f"batch_size ({batch_size}) must be in [1, {len(targets)}] (the number "
                       "of training examples)")
    self.inputs, self.targets = inputs, targets
    self.batch_size, self.seed = batch_size, seed
    self.epoch, self.position = 0, 0
    self._order = self._permutation(0)

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng((self.seed, epoch)).permutation(len(self.targets))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.position + self.batch_size > len(self._order):
      self.epoch, self.position = self.epoch + 1, 0
      self._order = self._permutation(self.epoch)
    rows = self._order[self.position:self.position + self.batch_size]
    self.position += self.batch_size
    return _batch(self.inputs[rows], self.targets[rows], np.ones(len(rows)))

  def get_state(self) -> dict:
    """The JSON-able position: {"epoch", "position"}."""
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state: dict) -> None:
    """Continues from a `get_state()`."""
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    self._order = self._permutation(self.epoch)


def fixed_batches(inputs: np.ndarray, targets: np.ndarray, batch_size: int) -> list[dict]:
  """Every example once, in order, in batches of `batch_size` (the last padded with weight 0).

  Args:
    inputs: [n, ...] examples.
    targets: [n, ...] labels.
    batch_size: rows per batch.

  Returns:
    ceil(n / batch_size) batches.
  """
  out = []
  for start in range(0, len(targets), batch_size):
    rows = np.arange(start, start + batch_size)
    real = rows < len(targets)
    rows = np.where(real, rows, 0)
    out.append(_batch(inputs[rows], targets[rows], real))
  return out
