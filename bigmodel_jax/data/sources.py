"""Random-access sources of {"text": str} documents: local text files or a named TFDS dataset."""

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from bigmodel_jax.data import text_files


@dataclasses.dataclass(frozen=True)
class _TfdsDataset:
  """How to read a named TFDS dataset: its TFDS name, text feature and split renames."""

  tfds_name: str
  text_key: str = "text"
  split_names: Mapping[str, str] = dataclasses.field(default_factory=dict)


KNOWN_DATASETS: Mapping[str, _TfdsDataset] = {
    "tiny_shakespeare": _TfdsDataset("tiny_shakespeare"),
    # lm1b has no validation split; its test split serves as validation.
    "lm1b": _TfdsDataset("lm1b", split_names={"validation": "test"}),
    "c4": _TfdsDataset("c4/en"),
}


class TextSource:
  """A random-access source (for `grain.MapDataset.source`) of {"text": str} records.

  Attributes:
    fingerprint: Identifies the underlying data and split, e.g. as a tokenizer cache key.
  """

  def __init__(self, records: Sequence[Mapping[str, Any]], text_key: str, fingerprint: str):
    """Wraps a TFDS data source.

    Args:
      records: The TFDS data source of one split.
      text_key: Name of the text feature in `records`.
      fingerprint: Identifies the data and split.
    """
    self._records = records
    self._text_key = text_key
    self.fingerprint = fingerprint

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, str]:
    text = self._records[index][self._text_key]
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    return {"text": text}

  def __repr__(self) -> str:
    return f"TextSource({self.fingerprint}, {len(self)} documents)"


def _load_text_files(
    data_dir: str | None, split: str, text_globs: Sequence[str] | None, validation_fraction: float
) -> TextSource:
  builder = text_files.prepare_builder(data_dir, text_globs, validation_fraction)
  fingerprint = f"text_files/{builder.builder_config.name}/{split}"
  return TextSource(builder.as_data_source(split), "text", fingerprint)


def _prepared_as_tfrecord(dataset: _TfdsDataset, data_dir: str | None) -> str | None:
  """The versioned directory of `dataset` in `data_dir` if it is prepared there (in a format
  without random access), else None."""
  try:
    versioned = tfds.builder(dataset.tfds_name, data_dir=data_dir).data_dir
  except tfds.core.registered.DatasetNotFoundError:  # this TFDS has no builder code for it
    return None
  return versioned if os.path.isfile(os.path.join(versioned, "dataset_info.json")) else None


def _prepare_hint(dataset: _TfdsDataset, data_dir: str | None) -> str:
  """Why a named TFDS dataset cannot be read from `data_dir`, and the command that prepares it."""
  directory = data_dir or tfds.core.constants.DATA_DIR  # ~/tensorflow_datasets or $TFDS_DATA_DIR
  versioned = _prepared_as_tfrecord(dataset, data_dir)
  state = (f"is prepared in {versioned} in a format without random access (TFRECORD); add "
           "--overwrite below or choose another data_dir" if versioned
           else f"is not prepared in {directory}")
  return (f"TFDS dataset {dataset.tfds_name!r} {state}. Random access needs the array_record "
          "format; prepare it once (this downloads it; the tfds command needs "
          f"`pip install tensorflow`):\n  tfds build {dataset.tfds_name} "
          f"--file_format=array_record --data_dir={directory}\nthen run again"
          + (f" (with --config.data.data_dir={data_dir})" if data_dir else ""))


def _load_tfds(name: str, data_dir: str | None, split: str) -> TextSource:
  dataset = KNOWN_DATASETS.get(name, _TfdsDataset(name))
  tfds_split = dataset.split_names.get(split, split)
  try:
    # download=False: nothing can be fetched at run time; prepare datasets beforehand.
    records = tfds.data_source(
        dataset.tfds_name, split=tfds_split, data_dir=data_dir, download=False
    )
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    if name in KNOWN_DATASETS:
      raise ValueError(f"data.name {name!r}: {_prepare_hint(dataset, data_dir)}") from e
    known = ["text_files", *KNOWN_DATASETS]
    raise ValueError(
        f"data.name {name!r} is not an available dataset (known: {known}, or any TFDS name"
        f" prepared in {data_dir}): {str(e).splitlines()[0]}"
    ) from e
  except (NotImplementedError, KeyError) as e:  # no array_record files (none, or TFRECORD)
    raise ValueError(f"data.name {name!r}: {_prepare_hint(dataset, data_dir)}") from e
  fingerprint = f"{dataset.tfds_name}/{tfds_split}"
  return TextSource(records, dataset.text_key, fingerprint)


def load_source(
    name: str,
    *,
    data_dir: str | None = None,
    split: str,
    text_globs: Sequence[str] | None = None,
    validation_fraction: float = 0.05,
) -> TextSource:
  """Loads one split of a text dataset as a random-access source of {"text": str}.

  Args:
    name: "text_files" (local files, built into `data_dir` on first use), "tiny_shakespeare",
      "lm1b", "c4" (c4/en), or any TFDS name already prepared in `data_dir`.
    data_dir: TFDS data directory; None means `~/tensorflow_datasets`.
    split: "train" or "validation" (mapped to "test" for lm1b), or any TFDS split.
    text_globs: For "text_files": glob patterns; None means the stdlib's Python sources.
    validation_fraction: For "text_files": fraction of every file (its end) in validation.

  Returns:
    The source.
  """
  if name == "text_files":
    return _load_text_files(data_dir, split, text_globs, validation_fraction)
  return _load_tfds(name, data_dir, split)


def iter_texts(source: Sequence[Mapping[str, str]], max_docs: int | None = None) -> Iterator[str]:
  """Yields the texts of the first `max_docs` documents (all if None) of `source`, in order.

  Args:
    source: A source from `load_source`.
    max_docs: At most this many documents.

  Returns:
    An iterator over texts.
  """
  num_docs = len(source) if max_docs is None else min(max_docs, len(source))
  return (source[i]["text"] for i in range(num_docs))


def bytes_per_token(source, tokenizer, max_docs: int | None = None) -> float:
  """Returns the UTF-8 bytes per token of a split, for reporting loss in bits per byte.

  bits/byte = (nats/token) / ln(2) / bytes_per_token. Every document ends with an EOS token
  in the pipeline, so EOS is counted as a token (it is predicted, and its loss counts) but
  contributes no bytes.

  Args:
    source: A source from `load_source`.
    tokenizer: A tokenizer from `make_tokenizer`.
    max_docs: Use only the first `max_docs` documents (all if None).

  Returns:
    Total UTF-8 bytes divided by total tokens (including one EOS per document).
  """
  num_bytes = num_tokens = 0
  for text in iter_texts(source, max_docs):
    num_bytes += len(text.encode("utf-8"))
    num_tokens += len(tokenizer.encode(text)) + 1
  return num_bytes / num_tokens
