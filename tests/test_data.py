"""Tests of bigmodel_jax.data: text-file corpus, tokenizers, sources and the packed pipeline."""

import collections
import json
import os
import pathlib
import random

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigmodel_jax import data
from bigmodel_jax.data import text_files

_WORDS = ["the", "model", "tokens", "naïve", "日本語", "straße", "🙂", "def", "return", "\n"]
_SEQ_LEN = 16


def _write_corpus(root, num_files=30):
  """Writes a small corpus (nested dirs, non-ASCII, an empty and an invalid-UTF-8 file)."""
  rng = random.Random(0)
  texts = {}
  for i in range(num_files):
    rel_path = os.path.join(f"dir{i % 3}", f"doc{i:02d}.txt")
    texts[rel_path] = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 60)))
  texts["empty.txt"] = ""
  for rel_path, text in texts.items():
    os.makedirs(os.path.dirname(os.path.join(root, rel_path)), exist_ok=True)
    with open(os.path.join(root, rel_path), "w", encoding="utf-8") as f:
      f.write(text)
  with open(os.path.join(root, "latin1.txt"), "wb") as f:
    f.write("café".encode("latin-1"))
  texts["latin1.txt"] = "caf\ufffd"
  return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(texts by relative path, text_globs, data_dir) of a small prepared corpus."""
  root = tmp_path_factory.mktemp("corpus")
  texts = _write_corpus(str(root))
  globs = [os.path.join(str(root), "**", "*.txt")]
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return texts, globs, data_dir


def _source(corpus, split):
  _, globs, data_dir = corpus
  return data.load_source(
      "text_files", data_dir=data_dir, split=split, text_globs=globs, validation_fraction=0.3
  )


def _docs(source):
  return list(data.iter_texts(source))


def _dataset(source, split="train", seed=0, **kwargs):
  kwargs = {"seq_len": _SEQ_LEN, "global_batch_size": 4, "num_epochs": None, **kwargs}
  return data.make_lm_dataset(
      source=source, tokenizer=data.ByteTokenizer(), split=split, seed=seed, **kwargs
  )


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _stream(batches):
  """Concatenates the non-padding tokens of batches back into one token stream.

  A row with n weighted targets holds n + 1 tokens, except all-padding rows (token 0, which
  the test corpora never contain).
  """
  tokens = []
  for batch in batches:
    for inputs, targets, weights in zip(batch["inputs"], batch["targets"], batch["weights"]):
      num_targets = int(weights.sum())
      if num_targets or inputs[0]:
        tokens.extend([int(inputs[0]), *targets[:num_targets].tolist()])
  return tokens


def _split_docs(tokens, eos_id):
  """Splits a token stream at EOS into decoded documents (the stream must end with EOS)."""
  docs, start = [], 0
  for i, token in enumerate(tokens):
    if token == eos_id:
      docs.append(data.ByteTokenizer().decode(tokens[start:i]))
      start = i + 1
  assert start == len(tokens)
  return docs


# Text files and split.


def _texts_by_path(builder, split):
  """{relative path: text} of one split (every test file is a single piece)."""
  records = builder.as_data_source(split)
  texts = {}
  for i in range(len(records)):
    path = records[i]["path"].decode()
    assert path not in texts, path
    texts[path] = records[i]["text"].decode()
  return texts


def test_every_file_splits_into_train_head_and_validation_tail(corpus):
  texts, globs, data_dir = corpus
  builder = text_files.prepare_builder(data_dir, globs, validation_fraction=0.3)
  train, validation = _texts_by_path(builder, "train"), _texts_by_path(builder, "validation")
  assert set(train) | set(validation) == {p for p, text in texts.items() if text}
  for path, text in texts.items():
    head, tail = train.get(path, ""), validation.get(path, "")
    assert (head, tail) == text_files.split_text(text, 0.3)
    assert head + tail == text
  assert sorted(_docs(_source(corpus, "validation"))) == sorted(validation.values())


@pytest.mark.parametrize("text, fraction, expected", [
    ("a\nb\nc\nd\n", 0.5, ("a\nb\n", "c\nd\n")),
    ("a\nb\nc\nd\n", 0.4, ("a\nb\nc\n", "d\n")),  # cut inside line "c": from the next one on
    ("abcdefghij", 0.3, ("abcdefg", "hij")),  # one line: cut mid-line
    ("abc\n", 0.0, ("abc\n", "")),
    ("abc\n", 1.0, ("", "abc\n")),
    ("", 0.5, ("", "")),
])
def test_split_text(text, fraction, expected):
  assert text_files.split_text(text, fraction) == expected


def test_pieces_cut_at_line_ends_and_concatenate():
  text = "".join(f"line {i}\n" for i in range(100)) + "x" * 25
  parts = text_files.pieces(text, max_chars=64)
  assert "".join(parts) == text
  assert all(len(part) <= 64 for part in parts)
  assert all(part.endswith("\n") for part in parts[:-1])
  assert text_files.pieces("", max_chars=8) == []
  assert text_files.pieces("y" * 20, max_chars=8) == ["y" * 8, "y" * 8, "y" * 4]


def test_invalid_utf8_is_replaced(corpus):
  _, globs, data_dir = corpus
  builder = text_files.prepare_builder(data_dir, globs, validation_fraction=0.3)
  head = _texts_by_path(builder, "train").get("latin1.txt", "")
  assert head + _texts_by_path(builder, "validation").get("latin1.txt", "") == "caf\ufffd"


def test_config_name_fingerprints_files_contents_and_builder_code(corpus, tmp_path, monkeypatch):
  _, globs, _ = corpus
  name = text_files.make_config(globs, 0.3).name
  assert text_files.make_config(globs, 0.3).name == name
  assert text_files.make_config(globs, 0.5).name != name
  (tmp_path / "extra.txt").write_text("more")
  extended = [*globs, str(tmp_path / "*.txt")]
  name = text_files.make_config(extended, 0.3).name
  (tmp_path / "extra.txt").write_text("mode")  # same size, other contents
  assert text_files.make_config(extended, 0.3).name != name
  name = text_files.make_config(extended, 0.3).name
  builder_code = tmp_path / "builder_v2.py"
  builder_code.write_text(pathlib.Path(text_files.__file__).read_text() + "\n# changed\n")
  monkeypatch.setattr(text_files, "__file__", str(builder_code))
  assert text_files.make_config(extended, 0.3).name != name


def test_default_stdlib_corpus(tmp_path):
  train = data.load_source("text_files", data_dir=str(tmp_path), split="train")
  validation = data.load_source("text_files", data_dir=str(tmp_path), split="validation")
  assert len(train) > 500 and len(validation) > 10
  assert "stdlib_py" in train.fingerprint
  assert not any("site-packages" in p for p, _ in text_files.list_files(text_files.default_globs()))


# Tokenizers.


@pytest.mark.parametrize("text", ["", "hello", "naïve 日本語 🙂 \x00\n\tend  "])
def test_byte_tokenizer_round_trips(text):
  tokenizer = data.make_tokenizer("byte")
  ids = tokenizer.encode(text)
  assert ids.dtype == np.int32 and tokenizer.vocab_size == 257 and tokenizer.eos_id == 256
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode(np.append(ids, tokenizer.eos_id)) == text


def test_sentencepiece_round_trips_and_is_cached(corpus, tmp_path):
  texts = _docs(_source(corpus, "train"))
  kwargs = {"vocab_size": 300, "cache_dir": str(tmp_path), "corpus_fingerprint": "corpus"}
  tokenizer = data.make_tokenizer("sentencepiece", training_texts=texts, **kwargs)
  assert 256 < tokenizer.vocab_size <= 300
  for text in [*texts, "unseen ünïcödé 中文 ✓ \x00\n  \t indented\n"]:
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32 and tokenizer.eos_id not in ids
    assert tokenizer.decode(ids) == text
  assert len(os.listdir(tmp_path)) == 1
  cached = data.make_tokenizer("sentencepiece", training_texts=None, **kwargs)
  np.testing.assert_array_equal(cached.encode(texts[0]), tokenizer.encode(texts[0]))


def test_unknown_tokenizer_names_the_key():
  with pytest.raises(ValueError, match="data.tokenizer"):
    data.make_tokenizer("wordpiece", vocab_size=10, cache_dir="/nonexistent")


# Sources.


def test_unknown_dataset_names_the_key(tmp_path):
  with pytest.raises(ValueError, match=r"data.name.*tiny_shakespeare"):
    data.load_source("no_such_dataset", data_dir=str(tmp_path), split="train")


@pytest.mark.parametrize(
    ("name", "split", "tfds_split"),
    [
        ("tiny_shakespeare", "train", "train"),
        ("tiny_shakespeare", "validation", "validation"),
        ("lm1b", "validation", "test"),
    ],
)
def test_named_tfds_datasets(name, split, tfds_split, tmp_path):
  # USE_CODE builds mock examples from the dataset's features: no TensorFlow, no network.
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data.load_source(name, data_dir=str(tmp_path), split=split)
  assert len(source) == 5 and source.fingerprint.endswith(tfds_split)
  assert all(isinstance(text, str) for text in data.iter_texts(source))
  batch = next(_dataset(source, split=split))
  assert batch["inputs"].shape == (4, _SEQ_LEN)


def test_bytes_per_token(corpus):
  source = _source(corpus, "train")
  docs = _docs(source)
  num_bytes = sum(len(d.encode()) for d in docs)
  bpt = data.bytes_per_token(source, data.ByteTokenizer())
  assert bpt == pytest.approx(num_bytes / (num_bytes + len(docs)))
  assert data.bytes_per_token(source, data.ByteTokenizer(), max_docs=1) == pytest.approx(
      len(docs[0].encode()) / (len(docs[0].encode()) + 1)
  )


# Pipeline.


def test_packing_loses_no_tokens(corpus):
  source = _source(corpus, "train")
  batches = list(_dataset(source, num_epochs=1))
  for batch in batches:
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "inputs": ((4, _SEQ_LEN), np.int32),
        "targets": ((4, _SEQ_LEN), np.int32),
        "weights": ((4, _SEQ_LEN), np.float32),
    }
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  weights = np.concatenate([b["weights"] for b in batches]).ravel()
  assert np.all(weights[: np.argmin(weights)] == 1) and np.all(weights[np.argmin(weights) :] == 0)
  assert sorted(_split_docs(_stream(batches), 256)) == sorted(_docs(source))


def test_train_reshuffles_each_epoch(corpus):
  source = _source(corpus, "train")
  docs = _split_docs(_stream(list(_dataset(source, num_epochs=2))), 256)
  first, second = docs[: len(source)], docs[len(source) :]
  assert sorted(first) == sorted(second) and first != second


def test_same_seed_same_batches_other_seed_differs(corpus):
  source = _source(corpus, "train")
  _assert_same_batches(_take(_dataset(source, seed=1), 20), _take(_dataset(source, seed=1), 20))
  with pytest.raises(AssertionError):
    _assert_same_batches(_take(_dataset(source, seed=1), 5), _take(_dataset(source, seed=2), 5))


def test_validation_is_finite_and_identical(corpus):
  source = _source(corpus, "validation")
  first = list(_dataset(source, split="validation"))
  _assert_same_batches(first, list(_dataset(source, split="validation", seed=7)))
  _assert_same_batches(first[:2], list(_dataset(source, split="validation", num_batches=2)))
  assert _split_docs(_stream(first), 256) == _docs(source)


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("n", [0, 1, 3, 7])
def test_resume_gives_the_same_batches(corpus, split, n):
  source = _source(corpus, split)
  iterator = _dataset(source, split=split, global_batch_size=2)
  _take(iterator, n)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 4)
  resumed = _dataset(source, split=split, global_batch_size=2)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 4), expected)


def test_resume_at_document_boundary_after_json():
  # Documents of exactly seq_len + 1 tokens (with EOS) leave no remainder in the packer: the
  # state that grain's packing cannot restore from JSON on its own.
  source = [{"text": chr(ord("a") + i) * _SEQ_LEN} for i in range(10)]
  iterator = _dataset(source, split="validation", global_batch_size=1)
  _take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = list(iterator)
  resumed = _dataset(source, split="validation", global_batch_size=1)
  resumed.set_state(state)
  _assert_same_batches(list(resumed), expected)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_processes_split_the_global_batch(corpus, split):
  source = _source(corpus, split)
  whole = _take(_dataset(source, split=split, global_batch_size=4), 6)
  parts = [
      _take(
          _dataset(source, split=split, global_batch_size=4, process_index=p, process_count=2), 6
      )
      for p in range(2)
  ]
  for batch, first, second in zip(whole, *parts):
    assert first["inputs"].shape == (2, _SEQ_LEN)
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])


def test_indivisible_batch_names_the_key(corpus):
  with pytest.raises(ValueError, match="train.global_batch_size"):
    _dataset(_source(corpus, "train"), global_batch_size=5, process_count=2)


def test_orbax_checkpoint_with_grain_handler(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  source = [{"text": chr(ord("a") + i) * _SEQ_LEN} for i in range(10)]
  iterator = _dataset(source, split="validation", global_batch_size=1)
  _take(iterator, 3)
  with ocp.CheckpointManager(str(tmp_path), item_names=("data",)) as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  expected = list(iterator)
  resumed = _dataset(source, split="validation", global_batch_size=1)
  with ocp.CheckpointManager(str(tmp_path), item_names=("data",)) as manager:
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  _assert_same_batches(list(resumed), expected)


def test_window_shuffled_rows_resume_exactly_and_differ_from_unshuffled(corpus):
  source = _source(corpus, "train")
  shuffled = _dataset(source, split="train", global_batch_size=2, shuffle_window=8)
  _take(shuffled, 3)  # stop in the middle of a window
  state = json.loads(json.dumps(shuffled.get_state()))
  expected = _take(shuffled, 6)
  resumed = _dataset(source, split="train", global_batch_size=2, shuffle_window=8)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 6), expected)
  plain = _take(_dataset(source, split="train", global_batch_size=2), 4)
  reordered = _take(_dataset(source, split="train", global_batch_size=2, shuffle_window=8), 4)
  assert any(not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(plain, reordered))
  def rows(batches):  # the first window (8 rows) holds the same rows in another order
    return sorted(row.tobytes() for b in batches for row in b["inputs"])

  assert rows(plain) == rows(reordered)


def test_one_long_file_is_mixed_over_the_whole_text(tmp_path):
  # Tiny Shakespeare through data.text_globs is one file: training must not sweep it in order.
  lines = [f"{i:06d}\n" for i in range(60_000)]  # 420 kB, 52 pieces
  (tmp_path / "play.txt").write_text("".join(lines))
  source = data.load_source("text_files", data_dir=str(tmp_path / "tfds"), split="train",
                            text_globs=[str(tmp_path / "play.txt")], validation_fraction=0.1)
  batches = _take(_dataset(source, seq_len=64, global_batch_size=16, shuffle_window=1024), 8)
  decoded = [data.ByteTokenizer().decode(row) for b in batches for row in b["inputs"]]
  positions = [int(line) for text in decoded for line in text.split("\n")[1:-1] if line.isdigit()]
  lines_per_piece = text_files.PIECE_CHARS // 7
  assert len({p // lines_per_piece for p in positions}) >= 4  # rows from at least 4 pieces
  assert max(positions) - min(positions) > 0.25 * len(lines)


def _validation_rows(num_docs=40):
  return [{"text": f"doc {i:03d} " + "x" * (i % 7) * 5} for i in range(num_docs)]


def _sample(source, seed=0, **kwargs):
  kwargs = {"seq_len": _SEQ_LEN, "global_batch_size": 4, "num_batches": 3, **kwargs}
  return data.sample_eval_batches(source=source, tokenizer=data.ByteTokenizer(), seed=seed,
                                  **kwargs)


def test_eval_sample_is_seeded_and_spread_over_the_whole_split():
  source = _validation_rows()
  pool = list(_dataset(source, split="validation", global_batch_size=1))
  pool_rows = [row.tobytes() for b in pool for row in b["inputs"]]
  sample = _sample(source)
  _assert_same_batches(sample, _sample(source))
  with pytest.raises(AssertionError):
    _assert_same_batches(sample, _sample(source, seed=1))
  sample_rows = [row.tobytes() for b in sample for row in b["inputs"]]
  assert not collections.Counter(sample_rows) - collections.Counter(pool_rows)  # drawn, no repeats
  assert max(map(pool_rows.index, sample_rows)) > len(pool_rows) / 2
  assert [b["inputs"].shape for b in sample] == [(4, _SEQ_LEN)] * 3


def test_eval_sample_of_a_small_split_takes_every_row_and_pads():
  source = _validation_rows(num_docs=3)
  pool = list(_dataset(source, split="validation", global_batch_size=1))
  sample = _sample(source, num_batches=100)
  assert len(sample) == -(-len(pool) // 4)
  assert sum(b["weights"].sum() for b in sample) == sum(b["weights"].sum() for b in pool)


def test_eval_sample_processes_split_the_global_batch():
  source = _validation_rows()
  whole = _sample(source)
  parts = [_sample(source, process_index=p, process_count=2) for p in range(2)]
  for batch, first, second in zip(whole, *parts, strict=True):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])
