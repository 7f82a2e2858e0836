"""Hugging Face `config.json` <-> TransformerConfig, for GPT-2, Llama and Qwen3.

Each Hugging Face model_type is one preset (`models/presets.py`): import builds the config from
that preset, export finds the model_type whose preset has the config's features (an error when
none has). Only what the models here compute is accepted: a field that would change the
computation to something they do not implement (another activation, attention biases in Llama, a
RoPE type other than Llama-3's, ...) is an error naming config.json and the field, never ignored.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

from bigmodel_jax.models import RopeScaling, TransformerConfig, presets
from bigmodel_jax.models.config import FEATURES

CONFIG_FILE = "config.json"
MODEL_TYPES = ("gpt2", "llama", "qwen3")
ARCHITECTURE_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                        "qwen3": "Qwen3ForCausalLM"}
# The preset (feature set) of each Hugging Face model_type.
PRESET_OF_MODEL_TYPE = {"gpt2": "gpt2", "llama": "llama", "qwen3": "qwen3"}
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings")


class HFCheckpointError(ValueError):
  """A Hugging Face checkpoint this project cannot read: names the file and field or tensor."""


def read_json_object(path: str) -> dict[str, Any]:
  """The JSON object stored in `path`.

  Args:
    path: a JSON file (config.json, model.safetensors.index.json, ...).

  Returns:
    The parsed object.

  Raises:
    HFCheckpointError: naming `path`, when it cannot be read or holds no JSON object.
  """
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise HFCheckpointError(f"{path}: not a readable JSON file ({e})") from e
  if not isinstance(value, dict):
    raise HFCheckpointError(f"{path}: holds a JSON {type(value).__name__}, not an object")
  return value


def read_config(directory: str) -> dict[str, Any]:
  """The parsed config.json of a Hugging Face model directory."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise HFCheckpointError(f"{path}: no such file (not a Hugging Face model directory)")
  return read_json_object(path)


def _require(hf: Mapping[str, Any], path: str, field: str, expected) -> None:
  """Raises naming `path` and `field` unless hf[field] (when present) is in `expected`."""
  if field in hf and hf[field] not in expected:
    raise HFCheckpointError(f"{path}: {field}={hf[field]!r} is not supported "
                            f"(supported: {list(expected)})")


def _field(hf: Mapping[str, Any], path: str, field: str):
  if hf.get(field) is None:
    raise HFCheckpointError(f"{path}: the field {field!r} is missing")
  return hf[field]


def _gpt2_fields(hf: Mapping[str, Any], path: str) -> dict[str, Any]:
  _require(hf, path, "activation_function", GPT2_ACTIVATIONS)
  _require(hf, path, "scale_attn_weights", (True,))
  _require(hf, path, "scale_attn_by_inverse_layer_idx", (False,))
  _require(hf, path, "add_cross_attention", (False,))
  embed_dim, num_heads = _field(hf, path, "n_embd"), _field(hf, path, "n_head")
  if embed_dim % num_heads:
    raise HFCheckpointError(f"{path}: n_embd ({embed_dim}) is not divisible by n_head "
                            f"({num_heads})")
  return dict(
      vocab_size=_field(hf, path, "vocab_size"),
      num_layers=_field(hf, path, "n_layer"), num_heads=num_heads, num_kv_heads=num_heads,
      head_dim=embed_dim // num_heads, embed_dim=embed_dim,
      mlp_dim=hf.get("n_inner") or 4 * embed_dim, max_seq_len=_field(hf, path, "n_positions"),
      norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      tie_embeddings=hf.get("tie_word_embeddings", True))


def _llama_rope(hf: Mapping[str, Any], path: str) -> tuple[float, RopeScaling | None]:
  """(rope_theta, rope_scaling) from `rope_parameters` (transformers >= 5) or the older
  `rope_theta` + `rope_scaling` fields."""
  field = "rope_parameters" if "rope_parameters" in hf else "rope_scaling"
  params = dict(hf.get(field) or {})
  theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = params.pop("rope_type", params.pop("type", "default"))
  if rope_type == "default":
    return theta, None
  if rope_type != "llama3":
    raise HFCheckpointError(f"{path}: {field}.rope_type={rope_type!r} is not supported "
                            "(supported: ['default', 'llama3'])")
  missing = [k for k in ROPE_SCALING_KEYS if k not in params]
  if missing:
    raise HFCheckpointError(f"{path}: {field} lacks {missing} for rope_type 'llama3'")
  return theta, RopeScaling(**{k: params[k] for k in ROPE_SCALING_KEYS})


def _llama_fields(hf: Mapping[str, Any], path: str) -> dict[str, Any]:
  _require(hf, path, "hidden_act", ("silu",))
  _require(hf, path, "attention_bias", (False,))
  _require(hf, path, "mlp_bias", (False,))
  _require(hf, path, "pretraining_tp", (1,))
  _require(hf, path, "use_sliding_window", (False,))
  embed_dim, num_heads = _field(hf, path, "hidden_size"), _field(hf, path, "num_attention_heads")
  theta, scaling = _llama_rope(hf, path)
  return dict(
      vocab_size=_field(hf, path, "vocab_size"),
      num_layers=_field(hf, path, "num_hidden_layers"), num_heads=num_heads,
      num_kv_heads=hf.get("num_key_value_heads") or num_heads,
      head_dim=hf.get("head_dim") or embed_dim // num_heads, embed_dim=embed_dim,
      mlp_dim=_field(hf, path, "intermediate_size"),
      max_seq_len=_field(hf, path, "max_position_embeddings"),
      norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=scaling,
      tie_embeddings=hf.get("tie_word_embeddings", False))


def from_hf_config(hf: Mapping[str, Any], path: str = CONFIG_FILE, **numerics
                   ) -> TransformerConfig:
  """The TransformerConfig of a Hugging Face GPT-2, Llama or Qwen3 config.

  Args:
    hf: the parsed config.json.
    path: the file it came from (for error messages).
    **numerics: TransformerConfig fields the checkpoint does not fix (dtype, param_dtype, remat).

  Returns:
    The validated TransformerConfig.

  Raises:
    HFCheckpointError: naming `path` and the field, for an unsupported model_type or setting.
  """
  model_type = hf.get("model_type")
  if model_type not in MODEL_TYPES:
    raise HFCheckpointError(f"{path}: model_type={model_type!r} is not supported "
                            f"(supported: {list(MODEL_TYPES)})")
  try:
    fields = _gpt2_fields(hf, path) if model_type == "gpt2" else _llama_fields(hf, path)
    return presets.from_preset(PRESET_OF_MODEL_TYPE[model_type], **fields, **numerics)
  except (TypeError, ValueError) as e:  # e.g. a size given as a string
    if isinstance(e, HFCheckpointError):
      raise
    raise HFCheckpointError(f"{path}: {e}") from e


def model_type(config: TransformerConfig) -> str:
  """The Hugging Face model_type whose preset has `config`'s features.

  Args:
    config: the model config.

  Returns:
    One of MODEL_TYPES.

  Raises:
    HFCheckpointError: naming the features, when no model_type has them (or, for gpt2, when the
      heads do not split the width).
  """
  features = config.features()
  for name in MODEL_TYPES:
    fields = presets.PRESETS[PRESET_OF_MODEL_TYPE[name]]
    if all(fields[f] == features[f] for f in FEATURES):
      if name == "gpt2" and config.num_heads * config.head_dim != config.embed_dim:
        raise HFCheckpointError(
            f"Hugging Face gpt2 needs head_dim * num_heads == embed_dim, got head_dim "
            f"({config.head_dim}) * num_heads ({config.num_heads}) != {config.embed_dim}")
      return name
  raise HFCheckpointError(f"no Hugging Face model_type has the features {features} (supported: "
                          + ", ".join(f"{t} = preset {PRESET_OF_MODEL_TYPE[t]!r}"
                                      for t in MODEL_TYPES) + ")")


def to_hf_config(config: TransformerConfig, dtype: str) -> dict[str, Any]:
  """The Hugging Face config.json fields of `config` (weights stored in `dtype`).

  Raises:
    HFCheckpointError: when no Hugging Face model_type has `config`'s features.
  """
  kind = model_type(config)
  common = dict(architectures=[ARCHITECTURE_CLASSES[kind]],
                model_type=kind, vocab_size=config.vocab_size,
                tie_word_embeddings=config.tie_embeddings, dtype=dtype, torch_dtype=dtype)
  if kind == "gpt2":
    return dict(common, n_embd=config.embed_dim, n_layer=config.num_layers,
                n_head=config.num_heads, n_inner=config.mlp_dim, n_positions=config.max_seq_len,
                layer_norm_epsilon=config.norm_eps, activation_function="gelu_new",
                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False)
  rope_scaling = None
  if config.rope_scaling is not None:
    rope_scaling = dict(config.rope_scaling._asdict(), rope_type="llama3")
  if kind == "qwen3":
    common.update(use_sliding_window=False)
  return dict(common, hidden_size=config.embed_dim, intermediate_size=config.mlp_dim,
              num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
              num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim,
              max_position_embeddings=config.max_seq_len, rms_norm_eps=config.norm_eps,
              rope_theta=config.rope_theta, rope_scaling=rope_scaling, hidden_act="silu",
              attention_bias=False, mlp_bias=False)
