"""The miniature's data: one token stream cut contiguously into D_pre, D_atk and D_eval.

Spec A.7.1 (our analogue of Huang et al.'s defender pre-training, 51k-example recovery set and
evaluation benchmarks): the embedded corpus as one token stream, split contiguously; D_eval cut
into equal contiguous chunks that act as benchmarks; batches are fixed windows drawn with a
seeded generator, so every run of a phase sees the same batches in the same order.
"""

import itertools

import numpy as np

from bigmodel_jax.data import iter_texts, load_source


def corpus_tokens(tokenizer, data_dir: str, max_bytes: int) -> np.ndarray:
  """The embedded corpus's training split, documents joined, its first `max_bytes` encoded.

  Args:
    tokenizer: the tokenizer (`encode`).
    data_dir: the TFDS directory of the text_files corpus ("" for the default).
    max_bytes: how many UTF-8 bytes of text to take.

  Returns:
    int32[n] token ids.
  """
  texts, size = [], 0
  for text in iter_texts(load_source("text_files", data_dir=data_dir or None, split="train")):
    texts.append(text)
    size += len(text.encode("utf-8"))
    if size >= max_bytes:
      break
  joined = "\n".join(texts).encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
  return np.asarray(tokenizer.encode(joined), np.int32)


def split_stream(tokens: np.ndarray, fractions: tuple[float, ...]) -> list[np.ndarray]:
  """Contiguous pieces of `tokens` in the given proportions (data.fractions)."""
  if abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
    raise ValueError(f"data.fractions ({fractions}) must be positive and sum to 1")
  bounds = np.round(np.cumsum((0.0, *fractions)) * len(tokens)).astype(int)
  return [tokens[a:b] for a, b in itertools.pairwise(bounds)]


def windows(segment: np.ndarray, rows: int, length: int, seed: int) -> np.ndarray:
  """int32[rows, length + 1] windows of `segment` at seeded random offsets."""
  if len(segment) <= length + 1:
    raise ValueError(f"a data segment of {len(segment)} tokens is too short for data.seq_len "
                     f"({length}); raise data.max_bytes")
  starts = np.random.default_rng(seed).integers(0, len(segment) - length - 1, rows)
  return np.stack([segment[s:s + length + 1] for s in starts])


def lm_batches(segment: np.ndarray, steps: int, batch_size: int, length: int, seed: int
               ) -> dict[str, np.ndarray]:
  """`steps` batches of next-token windows, stacked on a leading axis (every token weighted).

  Returns:
    {"inputs", "targets": int32[steps, batch, length], "weights": float32[steps, batch, length]}.
  """
  rows = windows(segment, steps * batch_size, length, seed).reshape(steps, batch_size, -1)
  return {"inputs": rows[..., :-1], "targets": rows[..., 1:],
          "weights": np.ones(rows[..., 1:].shape, np.float32)}


def benchmarks(segment: np.ndarray, chunks: int, rows: int, length: int, seed: int
               ) -> np.ndarray:
  """int32[chunks, rows, length + 1]: `rows` windows from each of `chunks` contiguous parts."""
  parts = np.array_split(segment, chunks)
  return np.stack([windows(part, rows, length, seed + i) for i, part in enumerate(parts)])


class StackedBatches:
  """The batches of `lm_batches` as the trainer's checkpointable training iterator.

  Batch i is slice i of the stack, so the state is the number of batches served and a resumed
  run sees the batches it would have seen.

  Args:
    batches: {"inputs", "targets", "weights"} with a leading steps axis.
  """

  def __init__(self, batches: dict[str, np.ndarray]):
    self.batches = batches
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.step >= len(self.batches["inputs"]):
      raise StopIteration
    batch = {k: v[self.step] for k, v in self.batches.items()}
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
