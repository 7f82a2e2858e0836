"""A TFDS dataset of local text files, split deterministically into train and validation.

The default corpus is the running Python's standard library (``*.py`` files), which exists on
every machine and needs no download.

The split is within files, as nanoGPT splits Tiny Shakespeare: the last `validation_fraction`
of every file (from the first line start at or after the cut) is validation, the rest is train.
So validation is the same mixture of files as training: no single file can dominate it (with a
split by whole files, one 0.76 MB prose file, `pydoc_data/topics.py`, was 42% of it).

Every file part is cut further, at line ends, into records of at most `PIECE_CHARS` characters,
each a document of its own (it ends with EOS in the pipeline). Shuffling records each epoch then
mixes the whole corpus, even a corpus of one long file (Tiny Shakespeare through
`data.text_globs`), instead of sweeping it in order.

The builder config name is a fingerprint of everything the build depends on: the Python
version, the patterns, the split fraction, every file's relative path and contents, and this
module's source code. A cached dataset built from another Python, other files or an earlier
version of this builder is never reused.
"""

import collections
import dataclasses
import glob
import hashlib
import os
import re
import sys
import sysconfig
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds

_VERSION = tfds.core.Version("2.0.0")
# Longest record in characters (longer file parts are cut at line ends).
PIECE_CHARS = 8192
# Directory names never read: installed third-party packages and byte-code caches.
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
# Below a test directory, directories named like `tokenizedata` or `data01` hold test inputs
# (deliberately broken or oddly encoded files), not representative source code.
_TEST_DIRS = frozenset({"test", "tests"})
_TEST_DATA_DIR = re.compile(r".*data\d*")


def default_globs() -> tuple[str, ...]:
  """Returns the glob patterns of the default corpus: the stdlib's Python sources.

  Returns:
    A one-element tuple with a recursive glob over the stdlib directory.
  """
  return (os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"),)


def _glob_root(pattern: str) -> str:
  """Returns the longest directory prefix of `pattern` that contains no glob magic."""
  parts = pattern.split(os.sep)
  for i, part in enumerate(parts):
    if glob.has_magic(part):
      return os.sep.join(parts[:i]) or os.sep
  return os.path.dirname(pattern)


def _is_excluded(rel_path: str) -> bool:
  """Whether a file (path relative to its glob root) is left out of the corpus."""
  dirs = rel_path.split(os.sep)[:-1]
  in_test_dir = False
  for d in dirs:
    if d in _EXCLUDED_DIRS or (in_test_dir and _TEST_DATA_DIR.fullmatch(d)):
      return True
    in_test_dir = in_test_dir or d in _TEST_DIRS
  return False


def list_files(patterns: Sequence[str]) -> list[tuple[str, str]]:
  """Lists the corpus files matched by `patterns`.

  Args:
    patterns: Glob patterns; `**` matches directories recursively.

  Returns:
    Sorted, de-duplicated `(absolute_path, path_relative_to_glob_root)` pairs of regular files.
  """
  files = {}
  for pattern in patterns:
    root = _glob_root(pattern)
    for path in glob.glob(pattern, recursive=True):
      rel_path = os.path.relpath(path, root)
      if os.path.isfile(path) and not _is_excluded(rel_path):
        files[os.path.abspath(path)] = rel_path
  duplicates = sorted(p for p, n in collections.Counter(files.values()).items() if n > 1)
  if duplicates:
    raise ValueError(f"data.text_globs match several files with the same relative path "
                     f"{duplicates[:5]}; use patterns whose roots do not overlap")
  return sorted(files.items())


def corpus_fingerprint(
    patterns: Sequence[str], files: Sequence[tuple[str, str]], validation_fraction: float
) -> str:
  """Returns a short, stable fingerprint of a corpus, its split and the code that builds it.

  Args:
    patterns: The glob patterns the files came from.
    files: `(absolute_path, relative_path)` pairs, as returned by `list_files`.
    validation_fraction: The fraction of every file held out for validation.

  Returns:
    A 16-hex-digit digest of the Python version, patterns, fraction, relative paths, file
    contents and this module's source.
  """
  digest = hashlib.sha256()
  with open(__file__, "rb") as f:
    digest.update(f.read())
  digest.update(f"|{sys.version_info[:3]}|{list(patterns)}|{validation_fraction!r}".encode())
  for path, rel_path in files:
    with open(path, "rb") as f:
      digest.update(f"|{rel_path}|".encode() + hashlib.sha256(f.read()).digest())
  return digest.hexdigest()[:16]


def split_text(text: str, validation_fraction: float) -> tuple[str, str]:
  """Splits one file into its train head and validation tail.

  Args:
    text: The file's contents.
    validation_fraction: The fraction of characters held out, in [0, 1].

  Returns:
    (head, tail): the tail is the last `validation_fraction` of `text`, starting at the first
    line start at or after the cut (mid-line only if no line starts after it).
  """
  cut = len(text) - round(len(text) * validation_fraction)
  if 0 < cut < len(text):
    newline = text.find("\n", cut - 1, len(text) - 1)  # ends the line before a line start >= cut
    cut = cut if newline == -1 else newline + 1
  return text[:cut], text[cut:]


def pieces(text: str, max_chars: int = PIECE_CHARS) -> list[str]:
  """Cuts text into consecutive pieces of at most `max_chars`, at line ends where possible.

  Args:
    text: The text.
    max_chars: The longest piece; a line longer than that is cut mid-line.

  Returns:
    The pieces, which concatenate to `text` (none if it is empty).
  """
  result, start = [], 0
  while start < len(text):
    end = min(start + max_chars, len(text))
    if end < len(text):
      end = text.rfind("\n", start, end) + 1 or end
    result.append(text[start:end])
    start = end
  return result


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  """A corpus of local text files. Create it with `make_config`, which names it.

  Attributes:
    patterns: Glob patterns of the files.
    validation_fraction: Fraction of every file (its end) in the validation split.
  """

  patterns: tuple[str, ...] = ()
  validation_fraction: float = 0.05


def make_config(
    patterns: Sequence[str] | None = None, validation_fraction: float = 0.05
) -> TextFilesConfig:
  """Makes a config whose name encodes a fingerprint of the corpus.

  Args:
    patterns: Glob patterns; None means the running Python's stdlib sources.
    validation_fraction: Fraction of every file (its end) in the validation split.

  Returns:
    The config, named e.g. `stdlib_py3_11_7_n1790_0123456789abcdef`.
  """
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}.")
  prefix = "stdlib" if patterns is None else "files"
  patterns = tuple(default_globs() if patterns is None else patterns)
  files = list_files(patterns)
  if not files:
    raise ValueError(f"No files match {patterns}.")
  version = "_".join(map(str, sys.version_info[:3]))
  fingerprint = corpus_fingerprint(patterns, files, validation_fraction)
  return TextFilesConfig(
      name=f"{prefix}_py{version}_n{len(files)}_{fingerprint}",
      version=_VERSION,
      description=f"Text files matching {list(patterns)}.",
      patterns=patterns,
      validation_fraction=validation_fraction,
  )


class TextFiles(tfds.core.GeneratorBasedBuilder):
  """Local text files as records {"text": a piece of a file, "path": its relative path}.

  Train holds the head of every file and validation its tail (`split_text`), both cut into
  pieces of at most `PIECE_CHARS` characters (`pieces`). Files that are not valid UTF-8 are
  decoded with errors="replace" (U+FFFD for each bad byte), so that no file is dropped and every
  record is valid text.
  """

  VERSION = _VERSION
  BUILDER_CONFIG_CLASS = TextFilesConfig

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "path": tfds.features.Text()}
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    config = self.builder_config
    splits = {"train": [], "validation": []}
    for path, rel_path in list_files(config.patterns):
      with open(path, encoding="utf-8", errors="replace") as f:
        head, tail = split_text(f.read(), config.validation_fraction)
      splits["train"] += [(rel_path, piece) for piece in pieces(head)]
      splits["validation"] += [(rel_path, piece) for piece in pieces(tail)]
    for split, records in splits.items():
      if not records:
        raise ValueError(f"Split {split!r} of {config.patterns} would be empty; change "
                         "data.validation_fraction or add files")
    return {split: self._generate_examples(records) for split, records in splits.items()}

  def _generate_examples(self, records: Sequence[tuple[str, str]]
                         ) -> Iterator[tuple[str, dict]]:
    index = collections.Counter()
    for rel_path, text in records:
      # Keyed by relative path and piece number: TFDS orders examples by a hash of the key, so
      # the corpus gives the same (well mixed) order wherever it sits on disk.
      yield f"{rel_path}#{index[rel_path]}", {"text": text, "path": rel_path}
      index[rel_path] += 1


def prepare_builder(
    data_dir: str | None = None,
    patterns: Sequence[str] | None = None,
    validation_fraction: float = 0.05,
) -> TextFiles:
  """Returns a prepared `TextFiles` builder, building it on first use and reusing it later.

  Args:
    data_dir: Where TFDS datasets live; None means `~/tensorflow_datasets`.
    patterns: Glob patterns; None means the running Python's stdlib sources.
    validation_fraction: Fraction of every file (its end) in the validation split.

  Returns:
    The builder; read it with `builder.as_data_source(split)`.
  """
  builder = TextFiles(
      config=make_config(patterns, validation_fraction),
      data_dir=os.path.expanduser(data_dir or "~/tensorflow_datasets"),
      file_format="array_record",
  )
  builder.download_and_prepare()
  return builder
