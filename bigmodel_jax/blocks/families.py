"""The paper's blocks under the naming and layouts of the JAX model families we recognise.

Adam-mini's partition (Zhang et al., ICLR 2025, final version; authors' code v1.1), per (per-layer)
tensor: token embedding and output head one block per token; query and key one block per head
(grouped-query attention: key per kv head); value, attention output and MLP matrices one block
per output neuron; norm scales the whole tensor; biases one block per element.

Recognised families and their names (layout):
- this project, flax NNX / linen `DenseGeneral`, MaxText, nanodo: `query`/`key`/`value` (D, H, Dh),
  `out`/`attn_out_proj` (H, Dh, D), MLP `up`/`gate`/`down`/`wi_0`/`wi_1`/`wo`/`Dense_*` (in, out),
  `embedding`, `lm_head`/`logits_dense` (D, V), norm `scale`.
- Hugging Face Flax Llama, Mistral, ...: `q_proj`/`k_proj`/`v_proj`/`o_proj` fused (in, H*Dh),
  `gate_proj`/`up_proj`/`down_proj`, `embed_tokens`, `*layernorm/weight`.
- Hugging Face Flax GPT-2: `c_attn` (3D, D) = q | k | v, `c_proj`, `c_fc`, all (out, in);
  `wte`, `wpe`.
- Gemma (linen and NNX): `q_einsum` (H, D, Dh), `kv_einsum` (2, K, D, Dh), `qkv_einsum`
  (3, H, D, Dh), `attn_vec_einsum` (H, Dh, D), `gating_einsum` (2, F, D) or (2, D, F), `linear`
  (F, D), `input_embedding`.
- Equinox: `query_proj`/`key_proj`/`value_proj`/`output_proj` and `Linear` `weight` (out, in),
  `Embedding.weight`.
- Haiku: `query`/`key`/`value`/`linear` `w` (in, out), `linear*` MLP `w`, `embeddings`,
  `scale`/`offset`.

Fused (.., H*Dh) kernels need the head size (`Heads`); everything else is read from the shapes.
"""

from bigmodel_jax.blocks.rules import BlockRule, Cut, Heads, RuleSet

_Q = ("query", "q_proj", "q", "wq", "query_proj")
_K = ("key", "k_proj", "k", "wk", "key_proj")
_V = ("value", "v_proj", "v", "wv", "value_proj")
_O = ("out", "o_proj", "out_proj", "attn_out_proj", "output_proj", "wo_attn", "dense_out")
_MLP = ("up", "gate", "down", "up_proj", "gate_proj", "down_proj", "fc1", "fc2", "fc_in",
        "fc_out", "wi", "wi_0", "wi_1", "wo", "w1", "w2", "w3", "Dense_*", "dense_*", "linear*",
        "mlp_in", "mlp_out", "in_proj", "dense_h_to_4h", "dense_4h_to_h")
_TOKEN_EMBED = ("embed", "embed_tokens", "wte", "word_embeddings", "tok_embeddings",
                "token_embedder", "embedder", "tok_embed", "token_embedding", "token_embed",
                "embedding", "shared")
_EMBED_LEAF = ("embedding", "embeddings", "weight", "input_embedding")
_POS_EMBED = ("pos_embed", "wpe", "position_embeddings", "pos_embedding", "position_embedding",
              "positional_embedding", "pos_emb")
_HEAD = ("lm_head", "logits_dense", "head", "unembed", "output_head")
_NORM_WEIGHT = ("weight",)  # a 1-D `weight` is a norm scale (linear weights are >= 2-D)
_IN_OUT = ("kernel", "w")  # flax / Haiku: (in, .., out)
_EINSUM = ("w", "kernel")  # Gemma linen `w`, Gemma NNX (flax examples) `kernel`


def _rule(name, pattern, axes=(), **kw) -> BlockRule:
  return BlockRule(name, pattern, axes, optional=True, **kw)


def _attention_rules(whole_value: bool) -> list[BlockRule]:
  value = "whole tensor" if whole_value else "per output neuron"
  return [
      # Explicit head axes: flax DenseGeneral (D, H, Dh) / (H, Dh, D); Gemma einsums.
      _rule("query (D, H, Dh): per head", (_Q, "kernel"), (-3, -1), ndim=3),
      _rule("key (D, K, Dh): per kv head", (_K, "kernel"), (-3, -1), ndim=3),
      _rule(f"value (D, K, Dh): {value}", (_V, "kernel"),
            (-3, -2, -1) if whole_value else (-3,), ndim=3),
      _rule("attn out (H, Dh, D): per output neuron", (_O, "kernel"), (-3, -2), ndim=3),
      _rule("gemma q_einsum (H, D, Dh): per head", ("q_einsum", _EINSUM), (-2, -1), ndim=3),
      _rule("gemma kv_einsum (2, K, D, Dh): k per kv head, v " + value, ("kv_einsum", _EINSUM),
            ndim=4, roles_axis=-4, roles=(
                Cut("key: per kv head", (-4, -2, -1)),
                Cut(f"value: {value}", (-4, -3, -2, -1) if whole_value else (-4, -2)))),
      _rule("gemma qkv_einsum (3, H, D, Dh): q, k per head, v " + value, ("qkv_einsum", _EINSUM),
            ndim=4, roles_axis=-4, roles=(
                Cut("query: per head", (-4, -2, -1)), Cut("key: per head", (-4, -2, -1)),
                Cut(f"value: {value}", (-4, -3, -2, -1) if whole_value else (-4, -2)))),
      _rule("gemma attn_vec_einsum (H, Dh, D): per output neuron", ("attn_vec_einsum", _EINSUM),
            (-3, -2), ndim=3),
      # GPT-2 (Hugging Face Flax Conv1D: kernel (out, in)); before the generic names.
      _rule("gpt2 c_attn (3D, D) = q | k | v: per head, per head, " + value,
            ("attn", "c_attn", "kernel"), ndim=2, roles_axis=-2, roles=(
                Cut("query: per head", (-2, -1), heads_axis=-2),
                Cut("key: per head", (-2, -1), heads_axis=-2),
                Cut(f"value: {value}", (-2, -1) if whole_value else (-1,)))),
      _rule("gpt2 attn c_proj (D, D) (out, in): per output neuron", ("attn", "c_proj", "kernel"),
            (-1,), ndim=2),
      # Fused heads, (in, out): HF-Flax q_proj (D, H*Dh), Haiku query/w.
      _rule("query (D, H*Dh): per head", (_Q, _IN_OUT), (-3, -1), ndim=2, heads_axis=-1),
      _rule("key (D, K*Dh): per kv head", (_K, _IN_OUT), (-3, -1), ndim=2, heads_axis=-1,
            kv=True),
      _rule(f"value (D, K*Dh): {value}", (_V, _IN_OUT), (-2, -1) if whole_value else (-2,),
            ndim=2),
      _rule("attn out (H*Dh, D): per output neuron", (_O, _IN_OUT), (-2,), ndim=2),
      # Fused heads, (out, in): Equinox / torch-style `weight`.
      _rule("query (H*Dh, D): per head", (_Q, "weight"), (-2, -1), ndim=2, heads_axis=-2),
      _rule("key (K*Dh, D): per kv head", (_K, "weight"), (-2, -1), ndim=2, heads_axis=-2,
            kv=True),
      _rule(f"value (K*Dh, D): {value}", (_V, "weight"), (-2, -1) if whole_value else (-1,),
            ndim=2),
      _rule("attn out (D, H*Dh): per output neuron", (_O, "weight"), (-1,), ndim=2),
  ]


def _gating_rules() -> list[BlockRule]:
  """Gemma's gating_einsum: a linen leaf `mlp/gating_einsum`, or an NNX module's `w` / `kernel`.

  It is stored as (2, F, D) or (2, D, F) depending on the version; the hidden size F exceeds the
  width D in every Gemma, so the longer axis is the output. Equal lengths match no rule (warned).
  """
  rules = []
  for pattern in (("mlp", "gating_einsum"), ("gating_einsum", _EINSUM)):
    for layout, last, axes in (("(2, F, D)", "smaller", (-3, -1)), ("(2, D, F)", "larger",
                                                                     (-3, -2))):
      rules.append(_rule(f"gemma gating_einsum {layout}: gate, up per output neuron", pattern,
                         ndim=3, last_axis=last, roles_axis=-3, roles=(
                             Cut("gate: per output neuron", axes),
                             Cut("up: per output neuron", axes))))
  return rules


def _mlp_rules() -> list[BlockRule]:
  return [
      _rule("gpt2 mlp c_fc / c_proj (out, in): per output neuron",
            ("mlp", ("c_fc", "c_proj"), "kernel"), (-1,), ndim=2),
      *_gating_rules(),
      _rule("gemma mlp linear (F, D): per output neuron", ("mlp", "linear"), (-2,), ndim=2),
      _rule("mlp (in, out): per output neuron", (_MLP, _IN_OUT), (-2,), ndim=2),
      _rule("mlp (out, in): per output neuron", (_MLP, "weight"), (-1,), ndim=2),
  ]


def transformer_rules(whole_value: bool = False) -> list[BlockRule]:
  """The Adam-mini partition of a decoder Transformer, for every recognised family.

  Args:
    whole_value: one block for the whole value matrix (the authors' option for short runs).

  Returns:
    The rules, in priority order (first match wins; all optional).
  """
  return [
      _rule("bias: per element", (("bias", "b", "offset"),), ()),
      _rule("token embedding: per token", (_TOKEN_EMBED, _EMBED_LEAF), (-1,), ndim=2),
      _rule("position embedding: whole tensor", (_POS_EMBED, _EMBED_LEAF), (-2, -1), ndim=2),
      _rule("position embedding: whole tensor", ((*_POS_EMBED, "positional_embeddings"),),
            (-2, -1), ndim=2),
      _rule("output head (D, V): per token", (_HEAD, _IN_OUT), (-2,), ndim=2),
      _rule("output head (V, D): per token", (_HEAD, "weight"), (-1,), ndim=2),
      *_attention_rules(whole_value),
      *_mlp_rules(),
      _rule("norm scale: whole tensor", ("scale",), (-1,), ndim=1),
      _rule("norm weight: whole tensor", (_NORM_WEIGHT,), (-1,), ndim=1),
  ]


def transformer_rule(head_dim: int | None = None, num_heads: int | None = None,
                     num_kv_heads: int | None = None, whole_value: bool = False,
                     extra_rules=()) -> RuleSet:
  """The default Adam-mini partition: `transformer_rules` with the head sizes of fused kernels.

  Args:
    head_dim: head size of fused (.., H*Dh) query/key kernels (HF-Flax, Haiku, Equinox, GPT-2).
    num_heads: alternatively the number of query heads (head size = width / num_heads).
    num_kv_heads: the number of key/value heads, for fused key kernels under grouped-query
      attention when `head_dim` is not given.
    whole_value: one block for the whole value matrix.
    extra_rules: `BlockRule`s tried before the built-in ones (your own model's names).

  Returns:
    A `RuleSet`.
  """
  return RuleSet([*extra_rules, *transformer_rules(whole_value)],
                 Heads(head_dim, num_heads, num_kv_heads))
