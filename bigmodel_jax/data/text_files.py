"""A TFDS dataset of local text files, split deterministically into train and validation.

The default corpus is the running Python's standard library (``*.py`` files), which exists on
every machine and needs no download. Because that corpus depends on the Python install, the
builder config name is a fingerprint of the corpus, so a cached dataset built from another
Python (or from other files) is never reused silently.
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

_VERSION = tfds.core.Version("1.0.0")
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
  """Returns a short, stable fingerprint of a corpus and its split.

  Args:
    patterns: The glob patterns the files came from.
    files: `(absolute_path, relative_path)` pairs, as returned by `list_files`.
    validation_fraction: The fraction of files assigned to validation.

  Returns:
    A 16-hex-digit digest of the Python version, patterns, fraction, relative paths and sizes.
  """
  digest = hashlib.sha256()
  digest.update(f"{sys.version_info[:3]}|{list(patterns)}|{validation_fraction!r}".encode())
  for path, rel_path in files:
    digest.update(f"|{rel_path}:{os.path.getsize(path)}".encode())
  return digest.hexdigest()[:16]


def is_validation(rel_path: str, validation_fraction: float) -> bool:
  """Assigns a file to validation by a stable hash of its relative path (not at random).

  Args:
    rel_path: The file's path relative to its glob root.
    validation_fraction: The expected fraction of files in validation, in [0, 1].

  Returns:
    True if the file belongs to the validation split, False for train.
  """
  digest = hashlib.sha256(rel_path.replace(os.sep, "/").encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  """A corpus of local text files. Create it with `make_config`, which names it.

  Attributes:
    patterns: Glob patterns of the files.
    validation_fraction: Fraction of files (by stable path hash) in the validation split.
  """

  patterns: tuple[str, ...] = ()
  validation_fraction: float = 0.05


def make_config(
    patterns: Sequence[str] | None = None, validation_fraction: float = 0.05
) -> TextFilesConfig:
  """Makes a config whose name encodes a fingerprint of the corpus.

  Args:
    patterns: Glob patterns; None means the running Python's stdlib sources.
    validation_fraction: Fraction of files in the validation split.

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
  """Local text files as documents: {"text": file contents, "path": relative path}.

  Files that are not valid UTF-8 are decoded with errors="replace" (U+FFFD for each bad
  byte), so that no file is dropped and every example is valid text.
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
      split = "validation" if is_validation(rel_path, config.validation_fraction) else "train"
      splits[split].append((path, rel_path))
    for split, files in splits.items():
      if not files:
        raise ValueError(f"Split {split!r} of {config.patterns} would be empty; raise "
                         "data.validation_fraction or add files")
    return {split: self._generate_examples(files) for split, files in splits.items()}

  def _generate_examples(self, files: Sequence[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
    for path, rel_path in files:
      with open(path, encoding="utf-8", errors="replace") as f:
        # Keyed by the relative path: TFDS orders examples by a hash of the key, so the corpus
        # gives the same order wherever it sits on disk.
        yield rel_path, {"text": f.read(), "path": rel_path}


def prepare_builder(
    data_dir: str | None = None,
    patterns: Sequence[str] | None = None,
    validation_fraction: float = 0.05,
) -> TextFiles:
  """Returns a prepared `TextFiles` builder, building it on first use and reusing it later.

  Args:
    data_dir: Where TFDS datasets live; None means `~/tensorflow_datasets`.
    patterns: Glob patterns; None means the running Python's stdlib sources.
    validation_fraction: Fraction of files in the validation split.

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
