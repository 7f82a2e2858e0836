"""Hugging Face checkpoints: parity with transformers (PyTorch, CPU) on tiny random Llama, GPT-2 and
Qwen3 models, sharded import, exact export round trip, and errors that name the file and the
tensor."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx, traverse_util

from bigmodel_jax import hf, sharding
from bigmodel_jax.hf import layout
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train import builders
from configs import default

TOKENS = np.random.default_rng(0).integers(0, 96, (2, 12))


def _llama(seed: int = 0) -> transformers.PreTrainedModel:
  """A tiny Llama with grouped-query attention and Llama-3 RoPE scaling."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
      rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.2,
      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8})
  return transformers.LlamaForCausalLM(config).eval()


def _gpt2(seed: int = 0) -> transformers.PreTrainedModel:
  """A tiny GPT-2 with tied embeddings."""
  torch.manual_seed(seed)
  config = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                   initializer_range=0.2, bos_token_id=0, eos_token_id=0)
  return transformers.GPT2LMHeadModel(config).eval()


def _qwen3(seed: int = 0) -> transformers.PreTrainedModel:
  """A tiny Qwen3 (QK-norm) with grouped-query attention, head_dim != hidden / heads, and random
  QK-norm scales (they start at one)."""
  torch.manual_seed(seed)
  config = transformers.Qwen3Config(
      vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
      rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.2)
  model = transformers.Qwen3ForCausalLM(config).eval()
  with torch.no_grad():
    for name, weight in model.named_parameters():
      if name.endswith(("q_norm.weight", "k_norm.weight")):
        weight.uniform_(0.5, 1.5)
  return model


MODELS = {"llama": _llama, "gpt2": _gpt2, "qwen3": _qwen3}


def _logits(model: transformers.PreTrainedModel, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
  """(name, torch model, directory) of a model saved in sharded safetensors with an index."""
  model = MODELS[request.param]()
  directory = str(tmp_path_factory.mktemp(request.param))
  model.save_pretrained(directory, max_shard_size="20KB")
  assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
  return request.param, model, directory


@pytest.fixture(scope="module")
def fsdp_mesh():
  config = default.get_config()
  config.mesh.update(data=1, fsdp=4, tensor=2)
  return builders.mesh_and_rules(config)


def _flat(params) -> dict:
  return traverse_util.flatten_dict(params, sep="/")


def test_import_matches_transformers_logits(saved, fsdp_mesh):
  name, model, directory = saved
  mesh, rules = fsdp_mesh
  config, graphdef, params = hf.import_checkpoint(directory, mesh, rules)
  assert hf.model_type(config) == name
  assert config.qk_norm == (name == "qwen3")
  if name == "llama":
    assert (config.num_kv_heads, config.rope_scaling.factor, config.tie_embeddings) == (2, 8, False)
  logits = np.asarray(nnx.merge(graphdef, params)(TOKENS))
  difference = np.abs(logits - _logits(model, TOKENS)).max()
  assert difference <= 1e-4, difference
  assert np.abs(logits).max() > 0.1  # not a trivially small comparison


def test_import_places_each_leaf_on_its_sharding(saved, fsdp_mesh):
  _, _, directory = saved
  mesh, rules = fsdp_mesh
  config, _, params = hf.import_checkpoint(directory, mesh, rules)
  expected = _flat(sharding.param_shardings(abstract_model(config)[1], mesh, rules))
  flat = _flat(params)
  assert set(flat) == set(expected)
  for path, leaf in flat.items():
    assert leaf.sharding.is_equivalent_to(expected[path], leaf.ndim), path
  query = flat["layers/attn/query/kernel"]  # [layers, embed, heads, head_dim]
  assert query.sharding.spec[1:3] == ("fsdp", "tensor")
  assert query.addressable_shards[0].data.shape == (2, 32 // 4, 4 // 2, config.head_dim)


def test_export_then_import_is_exact_and_transformers_loads_it(saved, fsdp_mesh, tmp_path):
  _, model, directory = saved
  mesh, rules = fsdp_mesh
  config, _, params = hf.import_checkpoint(directory, mesh, rules)
  files = hf.export_checkpoint(str(tmp_path), config, params, max_shard_bytes=16_000)
  assert "model.safetensors.index.json" in files
  _, _, again = hf.import_checkpoint(str(tmp_path), mesh, rules)
  for path, leaf in _flat(params).items():
    np.testing.assert_array_equal(np.asarray(_flat(again)[path]), np.asarray(leaf), err_msg=path)
  reloaded = type(model).from_pretrained(str(tmp_path)).eval()
  np.testing.assert_allclose(_logits(reloaded, TOKENS), _logits(model, TOKENS), atol=1e-5)


def test_export_in_bfloat16_is_read_back(fsdp_mesh, tmp_path):
  mesh, rules = fsdp_mesh
  directory = str(tmp_path / "gpt2")
  _gpt2().save_pretrained(directory)
  config, _, params = hf.import_checkpoint(directory, mesh, rules)
  hf.export_checkpoint(str(tmp_path / "bf16"), config, params, dtype="bfloat16")
  _, _, again = hf.import_checkpoint(str(tmp_path / "bf16"), mesh, rules)
  wte = np.asarray(_flat(params)["embed/embedding"])
  np.testing.assert_allclose(np.asarray(_flat(again)["embed/embedding"]), wte, rtol=1e-2)
  with open(tmp_path / "bf16" / "config.json") as f:
    assert json.load(f)["torch_dtype"] == "bfloat16"


@pytest.fixture
def gpt2_dir(tmp_path):
  """A single-file GPT-2 directory a test may damage."""
  _gpt2().save_pretrained(str(tmp_path))
  return tmp_path


def _edit_config(directory, **fields):
  path = directory / "config.json"
  config = json.loads(path.read_text())
  config.update(fields)
  path.write_text(json.dumps(config))


def _import(directory):
  mesh, rules = builders.mesh_and_rules(default.get_config())
  return hf.import_checkpoint(str(directory), mesh, rules)


def test_missing_shard_names_the_file_and_a_tensor(saved, tmp_path):
  _, _, directory = saved
  damaged = _damaged_copy(directory, tmp_path)
  with open(damaged / "model.safetensors.index.json") as f:
    shard = sorted(set(json.load(f)["weight_map"].values()))[1]
  os.remove(damaged / shard)
  with pytest.raises(hf.HFCheckpointError, match=rf"{shard}: missing "
                     r"shard \(it holds tensor '.+'\)"):
    _import(damaged)


def _truncate(path, size=5000):
  with open(path, "r+b") as f:
    f.truncate(size)


@pytest.mark.parametrize("file, damage, message", [
    ("config.json", lambda p: p.write_text("{not json"),
     r"config.json: not a readable JSON file \(Expecting property name"),
    ("config.json", lambda p: p.write_text("[1, 2]"), r"config.json: holds a JSON list, not an "
     "object"),
    ("model.safetensors", lambda p: p.write_text("garbage"),
     r"model.safetensors: not a readable safetensors file \(.*header too small"),
    ("model.safetensors", _truncate,
     r"model.safetensors: not a readable safetensors file \(.*not fully covered"),
])
def test_damaged_files_name_the_file(gpt2_dir, file, damage, message):
  damage(gpt2_dir / file)
  with pytest.raises(hf.HFCheckpointError, match=message):
    _import(gpt2_dir)


def test_a_field_of_the_wrong_type_is_named(gpt2_dir):
  _edit_config(gpt2_dir, n_embd="32")
  with pytest.raises(hf.HFCheckpointError, match=r"config.json: .*str"):
    _import(gpt2_dir)


def _damaged_copy(directory, tmp_path):
  """A copy of `directory` (hard links: replace a file, never write into it)."""
  damaged = tmp_path / "damaged"
  os.makedirs(damaged)
  for name in os.listdir(directory):
    os.link(os.path.join(directory, name), damaged / name)
  return damaged


def _replace(path, text):
  os.remove(path)
  path.write_text(text)


def test_damaged_index_and_shard_name_the_file(saved, tmp_path):
  damaged = _damaged_copy(saved[2], tmp_path)
  index = damaged / "model.safetensors.index.json"
  shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
  _replace(damaged / shard, "xx")
  with pytest.raises(hf.HFCheckpointError, match=rf"{shard}: not a readable safetensors file"):
    _import(damaged)
  _replace(index, '{"weight_map": [1]}')
  with pytest.raises(hf.HFCheckpointError, match=r"index.json: no 'weight_map' object"):
    _import(damaged)
  _replace(index, "{oops")
  with pytest.raises(hf.HFCheckpointError, match=r"index.json: not a readable JSON file"):
    _import(damaged)


def test_shape_mismatch_names_file_tensor_and_shapes(gpt2_dir):
  path = gpt2_dir / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(path))
  tensors["transformer.h.1.mlp.c_fc.weight"] = np.zeros((32, 100), np.float32)
  safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})
  with pytest.raises(hf.HFCheckpointError, match=r"model.safetensors: tensor "
                     r"'transformer.h.1.mlp.c_fc.weight' has shape \[32, 100\], expected "
                     r"\[32, 128\]"):
    _import(gpt2_dir)


def test_gpt2_files_without_prefix_and_with_mask_buffers_import(gpt2_dir):
  """Older GPT-2 files (saved from GPT2Model) lack "transformer." and carry causal masks."""
  path = gpt2_dir / "model.safetensors"
  tensors = {k.removeprefix("transformer."): v
             for k, v in safetensors.numpy.load_file(str(path)).items()}
  tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
  safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})
  _, graphdef, params = _import(gpt2_dir)
  logits = np.asarray(nnx.merge(graphdef, params)(TOKENS))
  np.testing.assert_allclose(logits, _logits(_gpt2(), TOKENS), atol=1e-4)


def test_missing_and_unexpected_tensors_are_named(gpt2_dir):
  path = gpt2_dir / "model.safetensors"
  tensors = safetensors.numpy.load_file(str(path))
  tensors["transformer.h.0.attn.q_norm.weight"] = np.ones(8, np.float32)
  safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})
  with pytest.raises(hf.HFCheckpointError, match="'transformer.h.0.attn.q_norm.weight' has no "
                     "place in a gpt2 model"):
    _import(gpt2_dir)
  del tensors["transformer.h.0.attn.q_norm.weight"], tensors["transformer.ln_f.bias"]
  safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})
  with pytest.raises(hf.HFCheckpointError, match="tensor 'transformer.ln_f.bias' is missing"):
    _import(gpt2_dir)


@pytest.mark.parametrize("fields, message", [
    ({"model_type": "mistral"}, r"config.json: model_type='mistral' is not supported"),
    ({"activation_function": "relu"}, r"config.json: activation_function='relu' is not supported"),
    ({"n_embd": None}, r"config.json: the field 'n_embd' is missing"),
])
def test_unsupported_config_names_the_field(gpt2_dir, fields, message):
  _edit_config(gpt2_dir, **fields)
  with pytest.raises(hf.HFCheckpointError, match=message):
    _import(gpt2_dir)


def test_unsupported_llama_settings_name_the_field():
  base = _llama().config.to_dict()
  with pytest.raises(hf.HFCheckpointError, match=r"rope_parameters.rope_type='yarn'"):
    hf.from_hf_config(dict(base, rope_parameters={"rope_type": "yarn", "factor": 4.0}))
  with pytest.raises(hf.HFCheckpointError, match=r"attention_bias=True"):
    hf.from_hf_config(dict(base, attention_bias=True))
  # The pre-transformers-5 spelling (rope_theta + rope_scaling) reads the same.
  old = {k: v for k, v in base.items() if k != "rope_parameters"}
  old.update(rope_theta=500000.0, rope_scaling=dict(base["rope_parameters"], rope_theta=None))
  del old["rope_scaling"]["rope_theta"]
  config = hf.from_hf_config(old)
  assert (config.rope_theta, config.rope_scaling.original_max_position_embeddings) == (5e5, 8)


def test_config_round_trip():
  for make in MODELS.values():
    config = hf.from_hf_config(make().config.to_dict())
    assert hf.from_hf_config(hf.to_hf_config(config, "float32")) == config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_shard_reads_the_same_values_as_the_whole_tensor(name, fsdp_mesh):
  mesh, rules = fsdp_mesh
  config = hf.from_hf_config(MODELS[name]().config.to_dict())
  shapes = _flat(nnx.to_pure_dict(abstract_model(config)[1]))
  shardings = _flat(sharding.param_shardings(abstract_model(config)[1], mesh, rules))
  rng = np.random.default_rng(0)
  sliced = 0
  for rule in layout.tensor_rules(config):
    tensor = rng.normal(size=rule.shape)
    leaf_shapes = [shapes[p].shape[rule.per_layer:] for p in rule.leaves]
    for position, path in enumerate(rule.leaves):
      whole = layout.to_leaves(rule, tensor, leaf_shapes)[position]
      indices = shardings[path].addressable_devices_indices_map(shapes[path].shape).values()
      for index in {tuple((s.start, s.stop) for s in i[rule.per_layer:]) for i in indices}:
        index = tuple(slice(*s) for s in index)
        stored = layout.tensor_slice(rule, position, leaf_shapes, index)
        part = tensor[stored].T if rule.transposed else tensor[stored]
        np.testing.assert_array_equal(part.reshape(whole[index].shape), whole[index], path)
        sliced += whole[index].size < whole.size
  assert sliced > 10  # the mesh did shard, and the shards were read as slices
  query = next(r for r in layout.tensor_rules(config) if "layers/attn/query/kernel" in r.leaves)
  leaf_shapes = [shapes[p].shape[1:] for p in query.leaves]
  assert layout.tensor_slice(query, 0, leaf_shapes, (slice(None), slice(None), slice(0, 4))) is None
