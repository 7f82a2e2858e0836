"""Hugging Face tokenizer.json as a tokenizer, and the experiments on an imported checkpoint:
fine-tuning from `init_from=hf:DIR` and memory planning with `--init_from=hf:DIR`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tokenizers
import torch
import transformers

from bigmodel_jax import hf
from bigmodel_jax.data import HuggingFaceTokenizer, arithmetic, make_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS = "<|endoftext|>"


def _train_tokenizer(texts) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer (GPT-2's scheme) trained offline on `texts`."""
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=320, special_tokens=[EOS],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer)
  return tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  rng = np.random.default_rng(0)
  for i in range(10):
    (root / f"doc_{i}.py").write_text(" ".join(rng.choice(["def", "x", "=", "1+2", "\n"], 200)))
  return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus):
  """A tiny GPT-2 saved by transformers with a BPE tokenizer.json (as on the Hub)."""
  directory = tmp_path_factory.mktemp("gpt2")
  source = arithmetic.ArithmeticSource(split="train", digits=2)
  texts = [source[i]["text"] for i in range(500)] + [p.read_text() for p in corpus.iterdir()]
  tokenizer = _train_tokenizer(texts)
  tokenizer.save(str(directory / "tokenizer.json"))
  eos = tokenizer.token_to_id(EOS)
  torch.manual_seed(0)
  config = transformers.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2,
                                   n_head=4, n_positions=64, bos_token_id=eos, eos_token_id=eos)
  transformers.GPT2LMHeadModel(config).save_pretrained(str(directory), max_shard_size="50KB")
  return directory


def test_tokenizer_json_round_trips_and_finds_eos(model_dir):
  tokenizer = make_tokenizer(f"hf:{model_dir}")
  assert isinstance(tokenizer, HuggingFaceTokenizer)
  text = "07+35=042\ndef x = 1+2"
  ids = tokenizer.encode(text)
  assert ids.dtype == np.int32 and 0 < len(ids) < len(text)  # merges were learned
  assert tokenizer.decode(ids) == text
  assert tokenizer.eos_id == tokenizers.Tokenizer.from_file(
      str(model_dir / "tokenizer.json")).token_to_id(EOS)
  assert tokenizer.decode([*ids, tokenizer.eos_id]) == text  # EOS is skipped
  assert tokenizer.vocab_size == hf.load_config(str(model_dir)).vocab_size


def test_missing_tokenizer_json_is_named(tmp_path):
  with pytest.raises(ValueError, match="tokenizer.json: no such file"):
    make_tokenizer(f"hf:{tmp_path}")


def _run(module, *args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_finetune_command_line_from_hf_directory(model_dir, corpus, tmp_path):
  workdir = tmp_path / "ft"
  _run("experiments.finetune", "--config=configs/finetune_forgetting.py:small",
       f"--config.init_from=hf:{model_dir}", f"--workdir={workdir}",
       "--config.finetune.methods=('mofo@0.1',)", "--config.data.seq_len=32",
       f"--config.data.text_globs=('{corpus}/*.py',)", f"--config.data.data_dir={tmp_path}/tfds",
       "--config.data.validation_fraction=0.2")
  with open(workdir / "summary.json") as f:
    summary = json.load(f)
  assert summary["num_params"] == hf.load_config(str(model_dir)).num_params()
  (run,) = summary["runs"]
  assert run["method"] == "mofo@0.1" and 0 < run["fraction_changed"] < 0.5
  assert np.isfinite(summary["pretrained"]["pretrain_loss"])


def test_memory_plan_of_an_imported_config(model_dir):
  result = json.loads(_run("experiments.memory", "--config=configs/gpt2.py:tiny",
                           f"--init_from=hf:{model_dir}", "--optimizers=adamw,adam_mini")
                      .strip().splitlines()[-1])
  num_params = hf.load_config(str(model_dir)).num_params()
  assert result["num_params"] == num_params and result["param_bytes"] == 4 * num_params
  assert result["optimizers"]["adamw"]["state_bytes"] > result["optimizers"]["adam_mini"][
      "state_bytes"]
