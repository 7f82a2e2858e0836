"""A generated fine-tuning domain: addition problems written as text, with exact-match accuracy.

Every problem `a + b` with 0 <= a, b < 10^digits is one document, zero-padded to a fixed width
so that all prompts have one length: digits=2 gives "07+35=042\n" (prompt "07+35=", answer
"042"). All 10^(2 digits) problems are enumerated and split into train / validation by a seeded
permutation, so no validation problem is ever trained on. `ArithmeticSource` is a random-access
source of {"text", "prompt", "completion"} for `make_lm_dataset(source=...)`;
`exact_match_accuracy` compares the answers of a greedy decoder (given, so that this data module
never runs a model) with the truth.
"""

import dataclasses

import numpy as np

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Problem:
  """One addition problem as text: `prompt` + `answer` + "\\n" is its document."""

  prompt: str
  answer: str


def problem(a: int, b: int, digits: int, reverse_answer: bool = False) -> Problem:
  """The zero-padded problem a + b (answer width digits + 1).

  With `reverse_answer` the answer is written least-significant digit first ("07+35=240"), the
  order in which the carries are computed; small Transformers learn addition far faster so
  (Lee et al., "Teaching Arithmetic to Small Transformers", 2023, https://arxiv.org/abs/2307.03381).
  """
  answer = f"{a + b:0{digits + 1}d}"
  return Problem(f"{a:0{digits}d}+{b:0{digits}d}=", answer[::-1] if reverse_answer else answer)


def split_pairs(digits: int, split: str, validation_fraction: float, seed: int) -> np.ndarray:
  """The (a, b) pairs of one split: int64[n, 2], in a seeded random order."""
  if split not in SPLITS:
    raise ValueError(f"arithmetic split must be one of {SPLITS}, got {split!r}")
  if not 0 < validation_fraction < 1:
    raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
  base = 10**digits
  order = np.random.default_rng(seed).permutation(base * base)
  num_validation = max(1, round(len(order) * validation_fraction))
  chosen = order[:num_validation] if split == "validation" else order[num_validation:]
  return np.stack([chosen // base, chosen % base], axis=1)


class ArithmeticSource:
  """Random-access source of {"text": "07+35=042\\n", "prompt": "07+35=", "completion":
  "042\\n"} records (one problem per record).

  Attributes:
    fingerprint: identifies the data and split.
    pairs: int64[n, 2], the operands of every record.
  """

  def __init__(self, *, split: str, digits: int = 2, validation_fraction: float = 0.2,
               seed: int = 0, reverse_answer: bool = False):
    """Enumerates the problems of one split.

    Args:
      split: "train" or "validation".
      digits: digits per operand (1 to 4).
      validation_fraction: fraction of all problems held out for validation.
      seed: seed of the train / validation split.
      reverse_answer: write answers least-significant digit first (see `problem`).
    """
    if not 1 <= digits <= 4:
      raise ValueError(f"arithmetic digits must be in [1, 4], got {digits}")
    self.digits = digits
    self.reverse_answer = reverse_answer
    self.pairs = split_pairs(digits, split, validation_fraction, seed)
    order = "/reversed" if reverse_answer else ""
    self.fingerprint = f"arithmetic/d{digits}{order}/v{validation_fraction}/s{seed}/{split}"

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, str]:
    """{"text": the document, "prompt", "completion": its two parts (completion-only loss)}."""
    item = self.problem(index)
    completion = f"{item.answer}\n"
    return {"text": item.prompt + completion, "prompt": item.prompt, "completion": completion}

  def problem(self, index: int) -> Problem:
    a, b = self.pairs[index]
    return problem(int(a), int(b), self.digits, self.reverse_answer)

  def __repr__(self) -> str:
    return f"ArithmeticSource({self.fingerprint}, {len(self)} problems)"


def encode_prompts(problems, tokenizer) -> np.ndarray:
  """int32[n, 1 + prompt length]: EOS (a document start, as in training) then the prompt."""
  rows = [np.concatenate([[tokenizer.eos_id], tokenizer.encode(p.prompt)]) for p in problems]
  if len({len(r) for r in rows}) != 1:
    raise ValueError("prompts of one batch must have one length (zero-padded problems)")
  return np.asarray(rows, np.int32)


def exact_match_accuracy(decode, params, source: ArithmeticSource, tokenizer,
                         num_problems: int, batch_size: int = 256) -> float:
  """Fraction of the first `num_problems` problems of `source` whose greedy answer is exact.

  An answer is exact when the text of the decoded tokens starts with the true answer. Prompts are
  decoded in groups of equal token length (one length for byte tokens; a subword tokenizer may
  split "07+35=" into more or fewer tokens than "11+22=").

  Args:
    decode: (params, prompts int32[b, p]) -> int32[b, >= digits + 1] greedy answers, e.g.
      `models.sampling.make_greedy_decoder(graphdef, digits + 1)`.
    params: the model parameters.
    source: the problems.
    tokenizer: the tokenizer (encode, decode, eos_id).
    num_problems: how many problems to score (capped at the split's size).
    batch_size: problems per decoder call (the last batch is padded with repeats).

  Returns:
    The exact-match accuracy in [0, 1].
  """
  count = min(num_problems, len(source))
  groups = {}
  for i in range(count):
    item = source.problem(i)
    groups.setdefault(len(tokenizer.encode(item.prompt)), []).append(item)
  correct = 0
  for problems in groups.values():
    for start in range(0, len(problems), batch_size):
      chunk = problems[start:start + batch_size]
      padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
      answers = np.asarray(decode(params, encode_prompts(padded, tokenizer)))
      correct += sum(tokenizer.decode(answers[i]).startswith(p.answer)
                     for i, p in enumerate(chunk))
  return correct / count
