"""Which Hugging Face tensor holds which parameter leaf, and how the layouts differ.

Every rule maps one Hugging Face tensor (per layer, for the stacked blocks) to one or more leaves
of this project's parameters. The layouts differ by at most a transpose (torch `nn.Linear`
stores [out, in]; GPT-2's `Conv1D` already stores [in, out]), a split of the output axis (GPT-2's
fused `c_attn` holds query, key and value) and a reshape (the head structure of the attention
kernels), so one pair of functions serves every tensor in both directions. Llama, Qwen3 and this
project use the "rotate half" RoPE layout, so query and key rows need no permutation.
"""

import math
from typing import NamedTuple

import numpy as np

from bigmodel_jax.hf.config import model_type
from bigmodel_jax.models import TransformerConfig

LAYER = "{layer}"  # stands for the layer index in a per-layer tensor name


class TensorRule(NamedTuple):
  """One Hugging Face tensor and the parameter leaves it holds.

  Attributes:
    name: the tensor's name; per-layer tensors contain LAYER.
    shape: the tensor's shape (per layer).
    leaves: paths of the leaves ("layers/attn/query/kernel"), in the order of the tensor's
      (possibly transposed) last axis.
    transposed: whether the tensor is stored [out, in] (torch Linear).
  """

  name: str
  shape: tuple[int, ...]
  leaves: tuple[str, ...]
  transposed: bool = False

  @property
  def per_layer(self) -> bool:
    return LAYER in self.name

  def tensor_name(self, layer: int | None) -> str:
    return self.name.replace(LAYER, str(layer)) if self.per_layer else self.name


def to_leaves(rule: TensorRule, tensor: np.ndarray, leaf_shapes) -> list[np.ndarray]:
  """Splits and reshapes one (per-layer) Hugging Face tensor into its leaves.

  Args:
    rule: the tensor's rule.
    tensor: the tensor, of shape rule.shape.
    leaf_shapes: the (per-layer) shape of each of rule.leaves.

  Returns:
    One array per leaf.
  """
  matrix = tensor.T if rule.transposed else tensor
  rows = math.prod(matrix.shape[:-1])
  splits = np.cumsum([math.prod(s) // rows for s in leaf_shapes])[:-1]
  return [part.reshape(s) for part, s in zip(np.split(matrix, splits, axis=-1), leaf_shapes)]


def from_leaves(rule: TensorRule, leaves) -> np.ndarray:
  """The inverse of `to_leaves`: the Hugging Face tensor of `rule` from its (per-layer) leaves."""
  lead = (rule.shape[::-1] if rule.transposed else rule.shape)[:-1]
  matrix = np.concatenate([np.reshape(leaf, (*lead, -1)) for leaf in leaves], axis=-1)
  return matrix.T if rule.transposed else matrix


def _flat_range(index: tuple[slice, ...], shape: tuple[int, ...]) -> slice | None:
  """The range of C-order flat positions that `index` selects from `shape`, if contiguous."""
  ranges = [range(n)[s] for s, n in zip(index, shape)]
  if any(r.step != 1 for r in ranges) or any(len(r) != n for r, n in zip(ranges[1:], shape[1:])):
    return None
  inner = math.prod(shape[1:])
  first = ranges[0] if ranges else range(1)
  return slice(first.start * inner, first.stop * inner)


def tensor_slice(rule: TensorRule, position: int, leaf_shapes, index: tuple[slice, ...]
                 ) -> tuple[slice, ...] | None:
  """The slice of the Hugging Face tensor that holds `leaf[index]` of one (per-layer) leaf.

  Sharded leaves are split along their leading axes (embed, heads, mlp, vocab), which select
  contiguous rows and columns of the stored matrix: this slice lets each device read only its
  part of the file.

  Args:
    rule: the tensor's rule.
    position: which of rule.leaves.
    leaf_shapes: the (per-layer) shape of each of rule.leaves.
    index: one slice per axis of the leaf.

  Returns:
    The index into the stored tensor, or None when the part is not a rectangle of it.
  """
  shape = leaf_shapes[position]
  lead = (rule.shape[::-1] if rule.transposed else rule.shape)[:-1]
  split = next(k for k in range(len(shape) + 1) if math.prod(shape[:k]) == math.prod(lead))
  rows, columns = _flat_range(index[:split], shape[:split]), _flat_range(index[split:],
                                                                         shape[split:])
  if rows is None or columns is None:
    return None
  offset = sum(math.prod(s) for s in leaf_shapes[:position]) // max(math.prod(lead), 1)
  columns = slice(columns.start + offset, columns.stop + offset)
  matrix_index = (rows, columns) if lead else (columns,)
  return matrix_index[::-1] if rule.transposed else matrix_index


def _llama_rules(c: TransformerConfig) -> list[TensorRule]:
  d, f, q, kv = c.embed_dim, c.mlp_dim, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  layer = f"model.layers.{LAYER}."
  rules = [
      TensorRule("model.embed_tokens.weight", (c.vocab_size, d), ("embed/embedding",)),
      TensorRule("model.norm.weight", (d,), ("final_norm/scale",)),
      TensorRule(layer + "input_layernorm.weight", (d,), ("layers/attn_norm/scale",)),
      TensorRule(layer + "post_attention_layernorm.weight", (d,), ("layers/mlp_norm/scale",)),
  ]
  for name, leaf, shape in (("self_attn.q_proj", "attn/query", (q, d)),
                            ("self_attn.k_proj", "attn/key", (kv, d)),
                            ("self_attn.v_proj", "attn/value", (kv, d)),
                            ("self_attn.o_proj", "attn/out", (d, q)),
                            ("mlp.gate_proj", "mlp/gate", (f, d)),
                            ("mlp.up_proj", "mlp/up", (f, d)),
                            ("mlp.down_proj", "mlp/down", (d, f))):
    rules.append(TensorRule(f"{layer}{name}.weight", shape, (f"layers/{leaf}/kernel",), True))
  if c.qk_norm:  # Qwen3
    for name, leaf in (("q_norm", "query_norm"), ("k_norm", "key_norm")):
      rules.append(TensorRule(f"{layer}self_attn.{name}.weight", (c.head_dim,),
                              (f"layers/attn/{leaf}/scale",)))
  if not c.tie_embeddings:
    rules.append(TensorRule("lm_head.weight", (c.vocab_size, d), ("lm_head/kernel",), True))
  return rules


def _gpt2_rules(c: TransformerConfig) -> list[TensorRule]:
  d, f = c.embed_dim, c.mlp_dim
  layer = f"transformer.h.{LAYER}."
  qkv = tuple(f"layers/attn/{name}" for name in ("query", "key", "value"))
  rules = [
      TensorRule("transformer.wte.weight", (c.vocab_size, d), ("embed/embedding",)),
      TensorRule("transformer.wpe.weight", (c.max_seq_len, d), ("pos_embed/embedding",)),
      TensorRule(layer + "attn.c_attn.weight", (d, 3 * d), tuple(p + "/kernel" for p in qkv)),
      TensorRule(layer + "attn.c_attn.bias", (3 * d,), tuple(p + "/bias" for p in qkv)),
      TensorRule(layer + "attn.c_proj.weight", (d, d), ("layers/attn/out/kernel",)),
      TensorRule(layer + "attn.c_proj.bias", (d,), ("layers/attn/out/bias",)),
      TensorRule(layer + "mlp.c_fc.weight", (d, f), ("layers/mlp/up/kernel",)),
      TensorRule(layer + "mlp.c_fc.bias", (f,), ("layers/mlp/up/bias",)),
      TensorRule(layer + "mlp.c_proj.weight", (f, d), ("layers/mlp/down/kernel",)),
      TensorRule(layer + "mlp.c_proj.bias", (d,), ("layers/mlp/down/bias",)),
  ]
  for hf_norm, norm in (("transformer.ln_f", "final_norm"), (layer + "ln_1", "layers/attn_norm"),
                        (layer + "ln_2", "layers/mlp_norm")):
    rules.append(TensorRule(hf_norm + ".weight", (d,), (norm + "/scale",)))
    rules.append(TensorRule(hf_norm + ".bias", (d,), (norm + "/bias",)))
  if not c.tie_embeddings:
    rules.append(TensorRule("lm_head.weight", (c.vocab_size, d), ("lm_head/kernel",), True))
  return rules


def tensor_rules(config: TransformerConfig) -> list[TensorRule]:
  """The rules of every Hugging Face tensor of `config`'s model_type (`hf.config.model_type`)."""
  return _gpt2_rules(config) if model_type(config) == "gpt2" else _llama_rules(config)


# Names that older GPT-2 files use (saved from GPT2Model, without the "transformer." prefix).
GPT2_PREFIX = "transformer."
# Non-parameter buffers some files carry (causal masks, RoPE tables): skipped on import.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
