"""Batches of in-memory example arrays: training batches that resume, fixed evaluation batches.

A data set small enough to hold as arrays (generated preference pairs, supervised examples,
prompts, images and their classes) is a dict of arrays with one leading example axis. Two
checkpointable iterators (the trainer's data interface, see train/task.py) draw training
batches from it: `RandomBatches` with replacement, batch i from `np.random.default_rng((seed,
i))`, and `ShuffledBatches` without, epoch e in the order of a permutation seeded by (seed, e);
either way a resumed run sees exactly the batches it would have seen. `padded_batches` cuts
the arrays into the fixed evaluation batches, padding the last with zero rows (a row weight of
0 must be among the arrays for those rows to count for nothing).

grain (the project's text pipeline) would do the same with a record source and an index
sampler; for arrays already in memory these few lines keep the batches plain numpy dicts.
"""

import numpy as np

Arrays = dict[str, np.ndarray]


def _num_rows(arrays: Arrays) -> int:
  sizes = {len(v) for v in arrays.values()}
  if len(sizes) != 1:
    raise ValueError(f"the arrays must have one number of rows, got "
                     f"{ {k: len(v) for k, v in arrays.items()} }")
  return sizes.pop()


class RandomBatches:
  """Batches of rows drawn uniformly (with replacement) from `arrays`, batch i seeded by
  (seed, i).

  Args:
    arrays: {name: array with leading axis n}.
    batch_size: rows per batch.
    seed: the seed of the draws.
  """

  def __init__(self, arrays: Arrays, batch_size: int, seed: int):
    self.num_rows = _num_rows(arrays)
    if self.num_rows == 0:
      raise ValueError("RandomBatches needs at least one row")
    self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> Arrays:
    index = np.random.default_rng((self.seed, self.step)).integers(0, self.num_rows,
                                                                   self.batch_size)
    self.step += 1
    return {k: v[index] for k, v in self.arrays.items()}

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])


class ShuffledBatches:
  """Endless batches of distinct rows of `arrays`, reshuffled every epoch; checkpointable.

  An epoch's leftover (fewer rows than a batch) is dropped; epoch e's order is a permutation
  seeded by (seed, e), so a restored iterator continues exactly.

  Args:
    arrays: {name: array with leading axis n}.
    batch_size: rows per batch (at most n).
    seed: seed of the permutations.
  """

  def __init__(self, arrays: Arrays, batch_size: int, seed: int):
    self.num_rows = _num_rows(arrays)
    if not 0 < batch_size <= self.num_rows:
      raise ValueError(f"batch_size ({batch_size}) must be in [1, {self.num_rows}] (the number "
                       "of training rows)")
    self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
    self.epoch, self.position = 0, 0
    self._order = self._permutation(0)

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng((self.seed, epoch)).permutation(self.num_rows)

  def __iter__(self):
    return self

  def __next__(self) -> Arrays:
    if self.position + self.batch_size > self.num_rows:
      self.epoch, self.position = self.epoch + 1, 0
      self._order = self._permutation(self.epoch)
    rows = self._order[self.position:self.position + self.batch_size]
    self.position += self.batch_size
    return {k: v[rows] for k, v in self.arrays.items()}

  def get_state(self) -> dict:
    """The JSON-able position: {"epoch", "position"}."""
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state: dict) -> None:
    """Continues from a `get_state()`."""
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    self._order = self._permutation(self.epoch)


def padded_batches(arrays: Arrays, batch_size: int) -> list[Arrays]:
  """`arrays` cut into consecutive batches of `batch_size` rows, the last padded with zeros.

  Args:
    arrays: {name: array with leading axis n}.
    batch_size: rows per batch.

  Returns:
    ceil(n / batch_size) batches, every one of `batch_size` rows.
  """
  n = _num_rows(arrays)
  batches = []
  for start in range(0, n, batch_size):
    batch = {}
    for name, value in arrays.items():
      rows = value[start:start + batch_size]
      pad = np.zeros((batch_size - len(rows), *value.shape[1:]), value.dtype)
      batch[name] = np.concatenate([rows, pad])
    batches.append(batch)
  return batches
