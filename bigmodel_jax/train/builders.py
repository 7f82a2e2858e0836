"""Turns the sections of an experiment config into the library's objects.

This is the one place where ml_collections configs meet the config-free library below train/:
`model` -> TransformerConfig, `mesh` + `sharding_rules` -> Mesh and rules, `data` -> tokenizer and
iterators. Every error names the config key at fault.
"""

import dataclasses
import os

import jax
import ml_collections

from bigmodel_jax import hf, sharding
from bigmodel_jax.data import (
  TOKENIZER_NAMES,
  ByteTokenizer,
  bytes_per_token,
  iter_texts,
  load_source,
  make_lm_dataset,
  make_tokenizer,
  sample_eval_batches,
)
from bigmodel_jax.data.tokenizers import HF_PREFIX
from bigmodel_jax.models import TransformerConfig, presets
from bigmodel_jax.models.config import FEATURES
from bigmodel_jax.train.task import Data

TRANSFORMER_FIELDS = {f.name for f in dataclasses.fields(TransformerConfig)}
PRESET_KEY = "architecture"  # model.architecture names the preset (models/presets.py)


def _build(name: str | None, fields: dict) -> TransformerConfig:
  """The TransformerConfig of preset `name` overridden by `fields`, whose features left None
  take the preset's values; without a preset (a saved TransformerConfig, e.g. a checkpoint's
  identity) `fields` must give every feature."""
  if name is None:
    return TransformerConfig(**fields)
  if name not in presets.PRESETS:
    raise ValueError(f"{PRESET_KEY} ({name!r}) must be one of {tuple(presets.PRESETS)}")
  overrides = {k: v for k, v in fields.items() if k not in FEATURES or v is not None}
  return presets.from_preset(name, **overrides)


def model_config(model: ml_collections.ConfigDict, tokenizer_vocab_size: int | None
                 ) -> TransformerConfig:
  """The TransformerConfig of the `model` section.

  `model.architecture` names the preset whose features the model has; the feature keys
  (`model.norm`, `model.qk_norm`, ...) left None take the preset's values, set ones override them.
  `model.vocab_size = 0` takes the tokenizer's vocabulary size; a positive value must be at least
  that (larger is allowed, e.g. GPT-2's 50257 rows with a byte tokenizer).

  Args:
    model: the `model` config section.
    tokenizer_vocab_size: the tokenizer's vocabulary size, or None when no data is involved.

  Returns:
    A validated TransformerConfig.
  """
  fields = dict(model)
  name = fields.pop(PRESET_KEY, None)
  unknown = set(fields) - TRANSFORMER_FIELDS
  if unknown:
    raise ValueError(f"unknown model config keys {sorted('model.' + k for k in unknown)}")
  if not fields.get("vocab_size"):
    if tokenizer_vocab_size is None:
      raise ValueError("model.vocab_size must be set when no tokenizer is given")
    fields["vocab_size"] = tokenizer_vocab_size
  elif tokenizer_vocab_size is not None and fields["vocab_size"] < tokenizer_vocab_size:
    raise ValueError(f"model.vocab_size ({fields['vocab_size']}) is smaller than the tokenizer's "
                     f"vocabulary ({tokenizer_vocab_size})")
  if fields.get("rope_scaling") is not None:
    fields["rope_scaling"] = dict(fields["rope_scaling"])  # a ConfigDict is no Mapping
  try:
    return _build(name, fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"invalid model config: model.{e}") from e


NUMERICS_FIELDS = ("dtype", "param_dtype", "remat", "scan_unroll")


def numerics(model: ml_collections.ConfigDict) -> dict:
  """The fields of the `model` section that a checkpoint does not fix (dtype, param_dtype,
  remat, scan_unroll)."""
  return {k: model[k] for k in NUMERICS_FIELDS}


def hf_model_config(init_from: str, model: ml_collections.ConfigDict) -> TransformerConfig:
  """The TransformerConfig of `init_from` = "hf:DIR" (DIR/config.json), numerics from `model`."""
  if not init_from.startswith(HF_PREFIX):
    raise ValueError(f"init_from ({init_from!r}) must be 'hf:DIR', a Hugging Face directory")
  return hf.load_config(init_from.removeprefix(HF_PREFIX), **numerics(model))


def mesh_and_rules(config: ml_collections.ConfigDict):
  """The device mesh of `config.mesh` and the logical rules of `config.sharding_rules`."""
  try:
    mesh = sharding.make_mesh(dict(config.mesh))
  except ValueError as e:
    raise ValueError(f"mesh: {e}") from e
  return mesh, sharding_rules(config)


def sharding_rules(config: ml_collections.ConfigDict) -> tuple:
  """The logical-to-mesh axis rules of `config.sharding_rules`, as hashable tuples."""
  return tuple((name, tuple(axes) if isinstance(axes, list | tuple) else axes)
               for name, axes in config.sharding_rules)


def check_batch_divisibility(global_batch_size: int, grad_accum_steps: int, mesh) -> None:
  """Raises naming `train.global_batch_size` if the batch does not split over the mesh."""
  ways = sharding.data_parallel_size(mesh) * grad_accum_steps
  if global_batch_size % ways:
    raise ValueError(
        f"train.global_batch_size ({global_batch_size}) must be divisible by the data-parallel "
        f"devices x train.grad_accum_steps ({sharding.data_parallel_size(mesh)} x "
        f"{grad_accum_steps} = {ways})")


def data_dir(data: ml_collections.ConfigDict) -> str:
  """Where TFDS datasets and tokenizer models are built and cached."""
  return os.path.expanduser(data.data_dir or "~/tensorflow_datasets")


def describe_split(source) -> dict:
  """The fingerprint, record count and UTF-8 bytes of one split."""
  num_bytes = sum(len(text.encode("utf-8")) for text in iter_texts(source))
  return {"fingerprint": source.fingerprint, "records": len(source), "bytes": num_bytes}


def tokenizer_vocab_size(data: ml_collections.ConfigDict) -> int:
  """The vocabulary size the `data` section implies, without building any data."""
  if data.tokenizer == "byte":
    return ByteTokenizer.vocab_size
  if data.tokenizer == "sentencepiece":
    return data.tokenizer_vocab_size
  if data.tokenizer.startswith(HF_PREFIX):
    return make_tokenizer(data.tokenizer).vocab_size
  raise ValueError(f"Unknown data.tokenizer {data.tokenizer!r}; known: {list(TOKENIZER_NAMES)}")


def make_data(config: ml_collections.ConfigDict) -> Data:
  """Sources, tokenizer and iterators of `config.data`, sharded for this process.

  Args:
    config: the experiment config (reads `data`, `train.global_batch_size`,
      `train.eval_batches`, `train.eval_seed` and `seed`).

  Returns:
    The run's Data.
  """
  data = config.data
  root = data_dir(data)
  globs = tuple(data.text_globs) if data.text_globs else None
  sources = {split: load_source(data.name, data_dir=root, split=split, text_globs=globs,
                                validation_fraction=data.validation_fraction)
             for split in ("train", "validation")}
  tokenizer = make_tokenizer(
      data.tokenizer, vocab_size=data.tokenizer_vocab_size,
      cache_dir=os.path.join(root, "tokenizers"),
      training_texts=iter_texts(sources["train"]),
      corpus_fingerprint=sources["train"].fingerprint)
  common = dict(tokenizer=tokenizer, seq_len=data.seq_len,
                global_batch_size=config.train.global_batch_size,
                process_index=jax.process_index(), process_count=jax.process_count())
  eval_batches = sample_eval_batches(source=sources["validation"],
                                     num_batches=config.train.eval_batches,
                                     seed=config.train.eval_seed, **common)
  return Data(
      tokenizer=tokenizer,
      train_iterator=lambda: make_lm_dataset(source=sources["train"], split="train",
                                             seed=config.seed,
                                             shuffle_window=data.shuffle_window, **common),
      eval_batches=lambda: eval_batches,
      bytes_per_token=bytes_per_token(sources["validation"], tokenizer),
      description={split: describe_split(source) for split, source in sources.items()},
      seq_len=data.seq_len,
  )
