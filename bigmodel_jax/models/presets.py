"""Named architectures as feature sets: the only place where a model family has a name.

A preset is the values of the TransformerConfig features (`config.FEATURES`) plus the family's
default for `tie_embeddings`; `from_preset(name, **fields)` builds a config from one, any field
(a feature too) overridden. The model code reads only the features.

- gpt2: LayerNorm, GELU MLP, biases, learned positions, tied embeddings (Radford et al., 2019).
  Its heads split the width: head_dim * num_heads == embed_dim, checked by `from_preset`.
- llama: RMSNorm, SwiGLU MLP, no biases, RoPE, untied head (Touvron et al., 2023).
- qwen3: llama with QK-norm (Qwen3 dense models), RoPE base 1e6.
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from bigmodel_jax.models.config import FEATURES, TransformerConfig

_NO_EXTRAS = dict(qk_norm=False, attn_logit_softcap=None, final_logit_softcap=None)
GPT2 = MappingProxyType(dict(norm="layernorm", mlp="gelu", positions="learned", use_bias=True,
                             **_NO_EXTRAS, tie_embeddings=True))
LLAMA = MappingProxyType(dict(norm="rmsnorm", mlp="swiglu", positions="rope", use_bias=False,
                              **_NO_EXTRAS, tie_embeddings=False))
QWEN3 = MappingProxyType(dict(LLAMA, qk_norm=True, rope_theta=1e6))

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"gpt2": GPT2, "llama": LLAMA, "qwen3": QWEN3})


def _check_split_heads(config: TransformerConfig) -> None:
  """GPT-2's heads split the width (its fused c_attn has no separate head size)."""
  if config.embed_dim % config.num_heads:
    raise ValueError(f"embed_dim ({config.embed_dim}) is not divisible by "
                     f"num_heads ({config.num_heads})")
  if config.embed_dim != config.num_heads * config.head_dim:
    raise ValueError(f"head_dim ({config.head_dim}) must equal embed_dim // num_heads "
                     f"({config.embed_dim // config.num_heads}) for gpt2")


# Shape constraints of a family beyond what the features need.
_SHAPE_CHECKS: Mapping[str, Callable[[TransformerConfig], None]] = MappingProxyType(
    {"gpt2": _check_split_heads})


def preset(name: str) -> dict[str, Any]:
  """The fields a preset sets (its features and defaults).

  Args:
    name: one of PRESETS.

  Returns:
    A new dict of TransformerConfig fields.

  Raises:
    ValueError: naming the preset, when it is unknown.
  """
  if name not in PRESETS:
    raise ValueError(f"preset ({name!r}) must be one of {tuple(PRESETS)}")
  return dict(PRESETS[name])


def from_preset(name: str, **fields) -> TransformerConfig:
  """A TransformerConfig of preset `name`, any of its fields overridden by `fields`.

  Args:
    name: one of PRESETS.
    **fields: the shape and numerics fields, and any feature to override.

  Returns:
    The validated config.

  Raises:
    ValueError: naming the field, on an invalid config (or the preset, when it is unknown).
  """
  config = TransformerConfig(**{**preset(name), **fields})
  if name in _SHAPE_CHECKS:
    _SHAPE_CHECKS[name](config)
  return config


def matching(config: TransformerConfig) -> list[str]:
  """The presets whose features `config` has (tie_embeddings and shapes aside)."""
  features = config.features()
  return [name for name, fields in PRESETS.items()
          if all(fields[f] == features[f] for f in FEATURES)]


def describe(config: TransformerConfig) -> str:
  """A short name of `config`'s architecture: its preset, or its features when none matches."""
  names = matching(config)
  if names:
    return names[0]
  c = config
  parts = [c.norm, c.mlp, c.positions, "bias" if c.use_bias else "no bias"]
  parts += ["qk-norm"] * c.qk_norm
  parts += [f"{name} {cap:g}" for name, cap in (("attn cap", c.attn_logit_softcap),
                                                ("logit cap", c.final_logit_softcap)) if cap]
  return "/".join(parts)
