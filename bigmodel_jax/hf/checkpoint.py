"""Import a Hugging Face GPT-2 / Llama / Qwen3 directory as sharded NNX parameters; export back.

Import reads config.json into a TransformerConfig, checks every tensor's presence and shape from
the safetensors headers, then builds each parameter leaf with `jax.make_array_from_callback` and
the leaf's NamedSharding: every device receives only its slice, assembled on the host from the
per-layer tensors it needs, so the model is never gathered onto one device. Export writes the
inverse layout shard by shard; export then import is exact.
"""

import json
import os
import shutil
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import Mesh

from bigmodel_jax import sharding
from bigmodel_jax.hf import layout
from bigmodel_jax.hf.config import (
  CONFIG_FILE,
  HFCheckpointError,
  from_hf_config,
  model_type,
  read_config,
  to_hf_config,
)
from bigmodel_jax.hf.safetensors_files import SafetensorsReader, write_safetensors
from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.sharding import abstract_model

# Files copied along on export when a tokenizer directory is given.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")
# Token-id fields of config.json kept on export (they describe the tokenizer, not the model).
TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def load_config(directory: str, **numerics) -> TransformerConfig:
  """The TransformerConfig of a Hugging Face model directory's config.json.

  Args:
    directory: the model directory.
    **numerics: dtype, param_dtype and remat (the checkpoint does not fix them).

  Returns:
    The validated TransformerConfig.
  """
  return from_hf_config(read_config(directory), os.path.join(directory, CONFIG_FILE), **numerics)


def _tensor_names(rules: list[layout.TensorRule], config: TransformerConfig, reader
                  ) -> dict[str, list[str]]:
  """Rule name -> the file's tensor name per layer (GPT-2 files may lack "transformer.")."""
  strip = (model_type(config) == "gpt2" and
           not any(n.startswith(layout.GPT2_PREFIX) for n in reader.weight_map))
  names = {}
  for rule in rules:
    layers = range(config.num_layers) if rule.per_layer else [None]
    full = [rule.tensor_name(layer) for layer in layers]
    names[rule.name] = [n.removeprefix(layout.GPT2_PREFIX) if strip else n for n in full]
  return names


def _check_tensors(rules, names: dict[str, list[str]], reader, config: TransformerConfig) -> None:
  """Raises naming file and tensor for a missing, misshapen or unexpected tensor."""
  expected = set()
  for rule in rules:
    for name in names[rule.name]:
      reader.check_shape(name, rule.shape)
      expected.add(name)
  if config.tie_embeddings:
    expected.add("lm_head.weight")  # a copy of the embedding that some files keep
  unexpected = sorted(n for n in reader.weight_map
                      if n not in expected and not n.endswith(layout.IGNORED_SUFFIXES))
  if unexpected:
    raise HFCheckpointError(f"{reader.path(unexpected[0])}: tensor {unexpected[0]!r} has no "
                            f"place in a {model_type(config)} model ({len(unexpected)} such "
                            f"tensors: {unexpected[:5]})")


def _leaf_callback(rule: layout.TensorRule, position: int, names: list[str], reader,
                   leaf_shapes, dtype):
  """The make_array_from_callback callback of one leaf: index -> the host slice it covers.

  Each call reads only the stored rows and columns of its slice (a whole per-layer tensor only
  when the slice is no rectangle of it); repeated indices (replicated axes) are read once.
  """
  cache = {}
  shape = leaf_shapes[position]

  def piece(name: str, index) -> np.ndarray:
    stored = layout.tensor_slice(rule, position, leaf_shapes, index)
    if stored is None:
      return layout.to_leaves(rule, reader.read(name), leaf_shapes)[position][index].astype(dtype)
    part = reader.read(name, stored)
    part = part.T if rule.transposed else part
    return part.reshape([len(range(n)[s]) for s, n in zip(index, shape)]).astype(dtype)

  def callback(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in cache:
      if rule.per_layer:
        layers = range(len(names))[index[0]]
        cache[key] = np.stack([piece(names[i], index[1:]) for i in layers])
      else:
        cache[key] = piece(names[0], index)
    return cache[key]

  return callback


def import_checkpoint(directory: str, mesh: Mesh, rules, **numerics):
  """Loads a Hugging Face Llama or GPT-2 directory onto `mesh`.

  Args:
    directory: holds config.json and model.safetensors (or shards + index).
    mesh: the device mesh.
    rules: logical-to-mesh axis rules (the parameters' shardings follow from them).
    **numerics: dtype, param_dtype ("float32" default: weights are cast to it) and remat.

  Returns:
    (TransformerConfig, graphdef, params): params a nested dict of arrays sharded on `mesh`,
    ready for `nnx.merge(graphdef, params)` and the train state.

  Raises:
    HFCheckpointError: naming the file and the field or tensor at fault.
  """
  config = load_config(directory, **numerics)
  graphdef, abstract = abstract_model(config)
  shardings = traverse_util.flatten_dict(sharding.param_shardings(abstract, mesh, rules), sep="/")
  shapes = traverse_util.flatten_dict(nnx.to_pure_dict(abstract), sep="/")
  reader = SafetensorsReader(directory)
  tensor_rules = layout.tensor_rules(config)
  names = _tensor_names(tensor_rules, config, reader)
  _check_tensors(tensor_rules, names, reader, config)
  params = {}
  for rule in tensor_rules:
    leaf_shapes = [shapes[p].shape[rule.per_layer:] for p in rule.leaves]
    for position, path in enumerate(rule.leaves):
      callback = _leaf_callback(rule, position, names[rule.name], reader, leaf_shapes,
                                config.weight_dtype)
      params[path] = jax.make_array_from_callback(shapes[path].shape, shardings[path], callback)
  missing = sorted(set(shapes) - set(params))
  if missing:  # the rules of layout.py must cover the whole model
    raise AssertionError(f"layout.py maps no tensor to the leaves {missing}")
  return config, graphdef, traverse_util.unflatten_dict(params, sep="/")


def _export_tensors(config: TransformerConfig, params, dtype) -> Iterator[tuple[str, np.ndarray]]:
  """(name, host array) for every Hugging Face tensor, one (per-layer) tensor at a time."""
  flat = traverse_util.flatten_dict(params, sep="/")
  for rule in layout.tensor_rules(config):
    layers = range(config.num_layers) if rule.per_layer else [None]
    for layer in layers:
      leaves = [jax.device_get(flat[p] if layer is None else flat[p][layer]) for p in rule.leaves]
      tensor = layout.from_leaves(rule, [np.asarray(leaf) for leaf in leaves])
      yield rule.tensor_name(layer), np.ascontiguousarray(tensor.astype(dtype))


def export_checkpoint(directory: str, config: TransformerConfig, params, *,
                      dtype: str | None = None, tokenizer_dir: str | None = None,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
  """Writes parameters as a Hugging Face directory that `transformers` loads.

  Args:
    directory: the output directory (created).
    config: the model config.
    params: the parameters (nested dict, as from `import_checkpoint` or the train state).
    dtype: the stored dtype name ("float32", "bfloat16", ...); defaults to config.param_dtype.
    tokenizer_dir: a Hugging Face directory whose tokenizer files and token-id fields of
      config.json are copied along.
    max_shard_bytes: the largest safetensors shard; more than one shard writes an index.

  Returns:
    The names of the files written.

  Raises:
    HFCheckpointError: before writing anything, when no Hugging Face model_type has the config's
      features.
  """
  dtype = dtype or config.param_dtype
  hf_config = to_hf_config(config, dtype)  # first: raises when no model_type fits
  os.makedirs(directory, exist_ok=True)
  tensors = _export_tensors(config, params, jnp.dtype(dtype))
  files = write_safetensors(directory, tensors, max_shard_bytes)
  if tokenizer_dir:
    source = read_config(tokenizer_dir) if os.path.isfile(
        os.path.join(tokenizer_dir, CONFIG_FILE)) else {}
    hf_config.update({k: source[k] for k in TOKEN_ID_FIELDS if k in source})
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(tokenizer_dir, name)):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(directory, name))
        files.append(name)
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2)
  return [*files, CONFIG_FILE]
