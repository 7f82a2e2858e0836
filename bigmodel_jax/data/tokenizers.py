"""Tokenizers: UTF-8 bytes, a SentencePiece model trained on (and cached for) a corpus, or the
tokenizer.json of a Hugging Face model directory ("hf:DIR").

All expose `vocab_size`, `eos_id`, `encode(str) -> int32[n]` and `decode(ids) -> str`.
"""

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
import tokenizers

TOKENIZER_NAMES = ("byte", "sentencepiece", "hf:DIR")
HF_PREFIX = "hf:"
PROGRESS_EVERY_S = 30.0  # how often a SentencePiece training run says it is still running


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, plus a separate EOS id 256 (vocab_size 257).

  EOS gets its own id rather than reusing a byte (e.g. NUL), so that any text, including text
  with NUL bytes, round-trips and EOS never collides with content.
  """

  vocab_size = 257
  eos_id = 256

  def encode(self, text: str) -> np.ndarray:
    """Returns the UTF-8 bytes of `text` as int32 ids (no EOS appended)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Returns the text of `ids`, skipping EOS; invalid UTF-8 decodes to U+FFFD."""
    ids = np.asarray(ids)
    return ids[ids < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SentencePieceTokenizer:
  """A SentencePiece model, normalisation-free and with byte fallback, so every string
  round-trips (except the meta symbol U+2581 itself, which decodes to a space)."""

  def __init__(self, model_proto: bytes):
    """Loads a serialised SentencePiece model.

    Args:
      model_proto: The contents of a `.model` file.
    """
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self.eos_id = self._sp.eos_id()

  def encode(self, text: str) -> np.ndarray:
    """Returns the ids of `text` as int32 (no EOS appended)."""
    return np.asarray(self._sp.encode(text), dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Returns the text of `ids`; EOS and other control ids decode to nothing."""
    return self._sp.decode(np.asarray(ids, dtype=np.int32).tolist())


class HuggingFaceTokenizer:
  """The tokenizer.json of a Hugging Face model directory, run by the `tokenizers` library.

  Special tokens are not added on encode (documents are joined with `eos_id`, as for the other
  tokenizers) and are skipped on decode.
  """

  def __init__(self, directory: str):
    """Loads DIR/tokenizer.json; the EOS id comes from DIR/config.json or tokenizer_config.json.

    Args:
      directory: a Hugging Face model directory.
    """
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise ValueError(f"{path}: no such file (data.tokenizer='hf:{directory}')")
    self._tokenizer = tokenizers.Tokenizer.from_file(path)
    self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    self.eos_id = self._eos_id(directory)

  def _eos_id(self, directory: str) -> int:
    """config.json's eos_token_id, else the id of tokenizer_config.json's eos_token."""
    fields = {}
    for name in ("tokenizer_config.json", "config.json"):  # config.json wins
      if os.path.isfile(os.path.join(directory, name)):
        with open(os.path.join(directory, name)) as f:
          fields.update(json.load(f))
    eos = fields.get("eos_token_id")
    if isinstance(eos, list):
      eos = eos[0] if eos else None
    if eos is None and fields.get("eos_token") is not None:
      token = fields["eos_token"]
      eos = self._tokenizer.token_to_id(token["content"] if isinstance(token, dict) else token)
    if eos is None:
      raise ValueError(f"{directory}: no eos_token_id in config.json and no known eos_token in "
                       "tokenizer_config.json")
    return int(eos)

  def encode(self, text: str) -> np.ndarray:
    """Returns the ids of `text` as int32 (no special tokens added)."""
    return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Returns the text of `ids`, special tokens (EOS) skipped."""
    return self._tokenizer.decode(np.asarray(ids, np.int64).tolist(), skip_special_tokens=True)


def _training_lines(texts: Iterable[str], max_line_bytes: int) -> Iterator[str]:
  """Splits documents into the non-empty lines SentencePiece trains on (it skips long ones)."""
  for text in texts:
    for line in text.splitlines():
      if line.strip() and len(line.encode("utf-8")) <= max_line_bytes:
        yield line


def _say(message: str) -> None:
  print(f"SentencePiece: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _progress(what: str, every_s: float):
  """Says on stderr that `what` started, every `every_s` seconds the time elapsed, and the total.

  Args:
    what: the work, e.g. "training a 8192-piece model".
    every_s: seconds between the lines that say it is still running.

  Returns:
    A context manager around the work.
  """
  start = time.monotonic()
  stop = threading.Event()

  def tick():
    while not stop.wait(every_s):
      _say(f"{what}: still running, {time.monotonic() - start:.0f} s elapsed")

  _say(f"{what} (minutes on a CPU for a large corpus; the model is cached once trained)")
  thread = threading.Thread(target=tick, daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
  _say(f"{what}: done in {time.monotonic() - start:.0f} s")


def train_sentencepiece(
    texts: Iterable[str], *, vocab_size: int, max_lines: int = 2_000_000
) -> bytes:
  """Trains a unigram SentencePiece model that round-trips every string.

  No normalisation, whitespace kept verbatim (indentation pieces allowed), newline and tab as
  user-defined pieces (training sees single lines), byte fallback for unseen characters.
  The vocabulary may come out smaller than `vocab_size` on a tiny corpus.

  Args:
    texts: Training documents.
    vocab_size: Requested vocabulary size (including 256 byte pieces, <unk> and </s>).
    max_lines: At most this many lines (sampled by SentencePiece) are used.

  Returns:
    The serialised model.
  """
  max_line_bytes = 8192
  model = io.BytesIO()
  with _progress(f"training a {vocab_size}-piece model", PROGRESS_EVERY_S):
    _train(texts, model, vocab_size, max_lines, max_line_bytes)
  return model.getvalue()


def _train(texts: Iterable[str], model: io.BytesIO, vocab_size: int, max_lines: int,
           max_line_bytes: int) -> None:
  """SentencePieceTrainer.train with train_sentencepiece's settings.

  Args:
    texts: Training documents.
    model: Receives the serialised model.
    vocab_size: Requested vocabulary size.
    max_lines: At most this many lines are used.
    max_line_bytes: Longer lines are skipped.
  """
  spm.SentencePieceTrainer.train(
      sentence_iterator=_training_lines(texts, max_line_bytes),
      model_writer=model,
      model_type="unigram",
      vocab_size=vocab_size,
      hard_vocab_limit=False,
      character_coverage=0.9995,
      byte_fallback=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      user_defined_symbols=["\n", "\t"],
      max_sentence_length=max_line_bytes,
      input_sentence_size=max_lines,
      shuffle_input_sentence=True,
      unk_id=0,
      eos_id=1,
      bos_id=-1,
      pad_id=-1,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
  )


def cached_sentencepiece(
    *,
    vocab_size: int,
    cache_dir: str,
    corpus_fingerprint: str,
    training_texts: Iterable[str] | None,
) -> SentencePieceTokenizer:
  """Loads the model cached for (corpus, vocab_size), training and caching it on a miss.

  Args:
    vocab_size: Requested vocabulary size.
    cache_dir: Directory of cached `.model` files.
    corpus_fingerprint: Identifies the training corpus (e.g. `source.fingerprint`).
    training_texts: Training documents; only read on a cache miss.

  Returns:
    The tokenizer.
  """
  key = hashlib.sha256(f"{corpus_fingerprint}|{vocab_size}".encode()).hexdigest()[:16]
  path = os.path.join(os.path.expanduser(cache_dir), f"spm_v{vocab_size}_{key}.model")
  if not os.path.exists(path):
    if training_texts is None:
      raise ValueError(f"No cached tokenizer at {path} and no training_texts to train one.")
    _say(f"no cached model at {path}: training one on {corpus_fingerprint}")
    proto = train_sentencepiece(training_texts, vocab_size=vocab_size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Write then rename, so a concurrent reader never sees a partial file.
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
      f.write(proto)
    os.replace(f.name, path)
  with open(path, "rb") as f:
    return SentencePieceTokenizer(f.read())


def make_tokenizer(
    name: str,
    *,
    vocab_size: int | None = None,
    cache_dir: str | None = None,
    training_texts: Iterable[str] | None = None,
    corpus_fingerprint: str | None = None,
) -> ByteTokenizer | SentencePieceTokenizer | HuggingFaceTokenizer:
  """Makes the tokenizer called `name`.

  Args:
    name: "byte", "sentencepiece" or "hf:DIR" (the `data.tokenizer` setting).
    vocab_size: SentencePiece vocabulary size; ignored for "byte" (always 257).
    cache_dir: Where SentencePiece models are cached.
    training_texts: SentencePiece training documents, read only on a cache miss.
    corpus_fingerprint: Cache key of the training corpus. If None, it is a hash of all of
      `training_texts` (which are then read twice, so pass a re-iterable collection).

  Returns:
    The tokenizer.
  """
  if name == "byte":
    return ByteTokenizer()
  if name.startswith(HF_PREFIX):
    return HuggingFaceTokenizer(name.removeprefix(HF_PREFIX))
  if name != "sentencepiece":
    raise ValueError(f"Unknown data.tokenizer {name!r}; known: {list(TOKENIZER_NAMES)}.")
  if vocab_size is None or cache_dir is None:
    raise ValueError("The sentencepiece tokenizer needs vocab_size and cache_dir.")
  if corpus_fingerprint is None:
    if training_texts is None:
      raise ValueError("The sentencepiece tokenizer needs training_texts or corpus_fingerprint.")
    training_texts = list(training_texts)
    digest = hashlib.sha256()
    for text in training_texts:
      digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    corpus_fingerprint = digest.hexdigest()
  return cached_sentencepiece(
      vocab_size=vocab_size,
      cache_dir=cache_dir,
      corpus_fingerprint=corpus_fingerprint,
      training_texts=training_texts,
  )
