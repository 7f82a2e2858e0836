"""Data sources and tokenizers that tell: named TFDS datasets not prepared for random access
name the `tfds build` command (file format, data_dir) that prepares them; SentencePiece
training says that it runs and for how long."""

import re
import time

import pytest

from bigmodel_jax import data
from bigmodel_jax.data import tokenizers


@pytest.mark.parametrize(("name", "tfds_name"), [("tiny_shakespeare", "tiny_shakespeare"),
                                                 ("lm1b", "lm1b"), ("c4", "c4/en")])
def test_an_unprepared_dataset_names_the_command_that_prepares_it(name, tfds_name, tmp_path):
  with pytest.raises(ValueError) as error:
    data.load_source(name, data_dir=str(tmp_path), split="validation")
  message = str(error.value)
  assert f"data.name {name!r}" in message and f"is not prepared in {tmp_path}" in message
  assert (f"tfds build {tfds_name} --file_format=array_record --data_dir={tmp_path}"
          in message)
  assert f"--config.data.data_dir={tmp_path}" in message


def test_the_default_data_dir_is_named_in_the_command(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # an empty default, whatever the machine
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(ValueError, match=r"--file_format=array_record --data_dir=\S+\nthen run "
                     r"again$"):
    data.load_source("tiny_shakespeare", data_dir=None, split="train")


def test_sentencepiece_training_says_what_it_does(monkeypatch, capsys, tmp_path):
  texts = [f"def f{i}(x):\n  return x * {i} + {i}\n" for i in range(300)]
  data.make_tokenizer("sentencepiece", vocab_size=300, cache_dir=str(tmp_path),
                      training_texts=texts, corpus_fingerprint="tiny")
  lines = capsys.readouterr().err.splitlines()
  assert lines[0].startswith(f"SentencePiece: no cached model at {tmp_path}/spm_v300_")
  assert lines[1].startswith("SentencePiece: training a 300-piece model (minutes on a CPU")
  assert re.fullmatch(r"SentencePiece: training a 300-piece model: done in \d+ s", lines[-1])
  data.make_tokenizer("sentencepiece", vocab_size=300, cache_dir=str(tmp_path),
                      training_texts=texts, corpus_fingerprint="tiny")
  assert not capsys.readouterr().err  # cached: nothing to say


def test_long_training_says_it_is_still_running(capsys):
  with tokenizers._progress("work", every_s=0.02):
    time.sleep(0.15)
  err = capsys.readouterr().err
  assert "SentencePiece: work: still running, 0 s elapsed" in err and "work: done in 0 s" in err
