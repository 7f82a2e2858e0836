"""Tests of bigmodel_jax.data: text-file corpus, tokenizers, sources and the packed pipeline."""

import json
import os
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


def test_split_is_deterministic_and_disjoint(corpus, tmp_path):
  texts, globs, _ = corpus
  train, validation = _source(corpus, "train"), _source(corpus, "validation")
  assert sorted(_docs(train) + _docs(validation)) == sorted(texts.values())
  expected = {p for p in texts if text_files.is_validation(p, 0.3)}
  assert 0 < len(expected) < len(texts)
  builder = text_files.prepare_builder(str(tmp_path), globs, validation_fraction=0.3)
  paths = builder.as_data_source("validation")
  assert {paths[i]["path"].decode() for i in range(len(paths))} == expected


def test_invalid_utf8_is_replaced(corpus):
  docs = _docs(_source(corpus, "train")) + _docs(_source(corpus, "validation"))
  assert "caf\ufffd" in docs


def test_config_name_fingerprints_the_files(corpus, tmp_path):
  _, globs, _ = corpus
  name = text_files.make_config(globs, 0.3).name
  assert text_files.make_config(globs, 0.3).name == name
  assert text_files.make_config(globs, 0.5).name != name
  (tmp_path / "extra.txt").write_text("more")
  assert text_files.make_config([*globs, str(tmp_path / "*.txt")], 0.3).name != name


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
