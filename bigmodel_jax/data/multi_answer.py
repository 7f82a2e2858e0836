"""A generated task where every prompt has several correct answers, shown with a skew.

The prompt is k distinct letters followed by ":"; every permutation of those letters is a
correct answer (k! of them), terminated by EOS. The training data draws the permutation (of the
prompt's positions) from a fixed skewed distribution, so some correct answers are common and
others rare: the setting where Li et al. (GEM, ICLR 2025) argue that cross-entropy collapses the
output distribution and GEM keeps it diverse. Prompts are split into train and held-out sets.

Sequences are [letters..., SEP, answer..., EOS]; the model sees inputs = seq[:-1] and predicts
targets = seq[1:], with weight 1 only on the answer and EOS tokens.
"""

import dataclasses
import itertools

import numpy as np

SEP_OFFSET, EOS_OFFSET = 0, 1  # ids num_letters + offset


@dataclasses.dataclass
class MultiAnswerTask:
  """The task and its prompt split.

  Attributes:
    num_letters: alphabet size.
    answer_len: letters per prompt and per answer (k).
    skew: probabilities of the k! permutations in the training data (in itertools order).
    held_out_fraction: fraction of prompts never seen in training.
    seed: seed of the prompt split.
  """

  num_letters: int = 16
  answer_len: int = 3
  skew: tuple[float, ...] = (0.55, 0.25, 0.1, 0.05, 0.03, 0.02)
  held_out_fraction: float = 0.2
  seed: int = 0

  def __post_init__(self):
    self.permutations = np.array(list(itertools.permutations(range(self.answer_len))))
    if len(self.skew) != len(self.permutations):
      raise ValueError(f"skew has {len(self.skew)} entries; answer_len={self.answer_len} "
                       f"has {len(self.permutations)} permutations")
    self.probs = np.asarray(self.skew, np.float64) / np.sum(self.skew)
    prompts = np.array(list(itertools.permutations(range(self.num_letters), self.answer_len)))
    prompts = prompts[np.random.default_rng(self.seed).permutation(len(prompts))]
    num_held_out = round(len(prompts) * self.held_out_fraction)
    self.splits = {"test": prompts[:num_held_out], "train": prompts[num_held_out:]}

  @property
  def sep_id(self) -> int:
    return self.num_letters + SEP_OFFSET

  @property
  def eos_id(self) -> int:
    return self.num_letters + EOS_OFFSET

  @property
  def vocab_size(self) -> int:
    return self.num_letters + 2

  @property
  def seq_len(self) -> int:
    """Length of the model's inputs (and targets)."""
    return 2 * self.answer_len + 1

  @property
  def prompt_len(self) -> int:
    return self.answer_len + 1

  def sequences(self, prompts: np.ndarray, perm_ids: np.ndarray) -> np.ndarray:
    """[n, 2k + 2] token sequences of prompts answered with the given permutations."""
    answers = np.take_along_axis(prompts, self.permutations[perm_ids], axis=1)
    n = len(prompts)
    return np.concatenate([prompts, np.full((n, 1), self.sep_id), answers,
                           np.full((n, 1), self.eos_id)], axis=1).astype(np.int32)

  def batch(self, sequences: np.ndarray) -> dict[str, np.ndarray]:
    """Model inputs, targets and weights (answer and EOS tokens only) of sequences."""
    weights = np.zeros((len(sequences), self.seq_len), np.float32)
    weights[:, self.answer_len:] = 1.0
    return {"inputs": sequences[:, :-1], "targets": sequences[:, 1:], "weights": weights}

  def decode(self, ids) -> str:
    """Text of token ids: letters a, b, ..., ":" for SEP, a newline for EOS (for reading
    samples; the task is its own tokenizer)."""
    names = [chr(ord("a") + i) for i in range(self.num_letters)] + [":", "\n"]
    return "".join(names[int(i)] for i in ids)

  def sample_batch(self, rng: np.random.Generator, batch_size: int, split: str = "train"
                   ) -> dict[str, np.ndarray]:
    """A batch of prompts of `split` with answers drawn from the skewed distribution."""
    prompts = self.splits[split][rng.integers(0, len(self.splits[split]), batch_size)]
    perm_ids = rng.choice(len(self.permutations), size=batch_size, p=self.probs)
    return self.batch(self.sequences(prompts, perm_ids))

  def all_answers_batch(self, prompts: np.ndarray) -> dict[str, np.ndarray]:
    """Every correct answer of every prompt (prompt-major), for the uniform-over-correct NLL."""
    n, m = len(prompts), len(self.permutations)
    return self.batch(self.sequences(np.repeat(prompts, m, axis=0), np.tile(np.arange(m), n)))

  def answer_index(self, prompt: np.ndarray, answer: np.ndarray) -> int:
    """Which permutation `answer` (k letters then EOS) is of `prompt`, or -1 if incorrect."""
    if len(answer) != self.answer_len + 1 or answer[-1] != self.eos_id:
      return -1
    for index, perm in enumerate(self.permutations):
      if np.array_equal(prompt[perm], answer[:-1]):
        return index
    return -1


class MultiAnswerBatches:
  """Training batches of a task as a checkpointable iterator (the trainer's data interface).

  Batch i is drawn from `np.random.default_rng((seed, i))`, so the state is the batch count and
  a resumed run sees the batches it would have seen (single-process runs).

  Args:
    task: the task.
    batch_size: rows per batch.
    seed: the seed of the draws.
    split: the prompts' split.
  """

  def __init__(self, task: MultiAnswerTask, batch_size: int, seed: int, split: str = "train"):
    self.task, self.batch_size, self.seed, self.split = task, batch_size, seed, split
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, self.step))
    self.step += 1
    return self.task.sample_batch(rng, self.batch_size, self.split)

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
