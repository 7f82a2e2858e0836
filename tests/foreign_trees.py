"""Parameter pytrees of other projects' models, with each leaf's paper-rule block count.

A fixture module for the partition engine's tests (Adam-mini, MoFO and Hessian blocks on models that
bigmodel_jax did not build). Each builder returns a `FamilyCase`: the parameter pytree with the
other project's real names, shapes and (in, out) / (out, in) layouts, at tiny sizes; the keyword
arguments a user has to give because the shapes cannot tell them (heads fused into one axis); the
stacked-layer declaration a user would give for scanned models; and, per leaf, the role and the
number of blocks that the Adam-mini partition rule prescribes (Zhang et al., "Adam-mini: Use Fewer
Learning Rates To Gain More", ICLR 2025; "Why Transformers Need Adam: A Hessian Perspective",
NeurIPS 2024):

- token embedding (V, D): one block per token, V. Untied output head: one block per output token, V.
- learned position-embedding table: one block for the whole tensor.
- query: one block per head, H. key: one block per kv head, K (grouped-query attention: K < H).
- value: one block per output neuron, K * Dh. Attention output projection: one per output neuron, D.
- MLP matrices: one block per output neuron (up / gate / fc1: F, down / fc2: D).
- norm scales: one block per tensor. Biases, those of linear layers and norm offsets (LayerNorm
  `bias`, Haiku `offset`) alike: one block per element (plain Adam; the authors treat every bias
  so).
- a leaf that holds several roles gets the sum of its roles' blocks (GPT-2's fused c_attn, Gemma's
  kv_einsum, qkv_einsum and gating_einsum).
- leaves whose layers are stacked on an axis count the blocks per layer, times the number of layers.

Leaf names are `path_string` of `jax.tree_util.tree_flatten_with_path(params)`. The sizes differ
from family to family only where the source forces them (Hugging Face GPT-2 and Llama, and nanodo,
derive head_dim = D // H; everywhere else Dh = 6 while D // H = 4, so a head count guessed as
width // heads comes out wrong). L = 3 layers everywhere, so a layer axis is never mistaken for the
leading 2 of a fused kv / gating tensor.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROLES = frozenset({
    "token_embedding", "position_embedding", "lm_head", "query", "key", "value", "attn_out", "mlp",
    "norm", "bias", "qkv_fused", "kv_fused", "gate_up_fused",
})


@dataclasses.dataclass(frozen=True)
class Expected:
  """What the paper's rule prescribes for one leaf: its role and its block count (all layers)."""

  role: str
  blocks: int


@dataclasses.dataclass(frozen=True)
class FamilyCase:
  """One foreign model: its parameters, what a user must tell the engine, and the expected blocks.

  `kwargs` holds what the shapes cannot tell (a head count or head size for heads fused into one
  axis); `layer_axes` maps a subtree's path (in `path_string` form, from the root of `params`) to
  the axis its leaves' layers are stacked on, or is None when layers are separate subtrees.
  """

  name: str
  params: Any
  kwargs: dict
  layer_axes: dict | None
  expected: dict[str, Expected]


def path_string(key_path: Sequence[Any]) -> str:
  """'/'-joins a key path: DictKey.key, GetAttrKey.name, SequenceKey.idx (as str)."""
  parts = []
  for key in key_path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(key.name)
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      raise TypeError(f"unexpected key {key!r} in a parameter path")
  return "/".join(parts)


def leaves_by_path(params: Any) -> dict[str, Any]:
  """Every leaf of `params`, keyed by its `path_string`."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  out = {}
  for key_path, leaf in flat:
    name = path_string(key_path)
    if name in out:
      raise ValueError(f"two leaves share the path {name!r}")
    out[name] = leaf
  return out


def check_case(case: FamilyCase) -> None:
  """Asserts that `case.expected` names exactly the leaves of `case.params`, with sane entries."""
  leaves = leaves_by_path(case.params)
  missing = sorted(set(leaves) - set(case.expected))
  extra = sorted(set(case.expected) - set(leaves))
  assert not missing and not extra, f"{case.name}: no entry for {missing}; no leaf for {extra}"
  for name, want in case.expected.items():
    leaf = leaves[name]
    assert want.role in ROLES, f"{case.name}: {name}: unknown role {want.role!r}"
    assert isinstance(want.blocks, int) and 1 <= want.blocks <= leaf.size, (case.name, name, want)
    assert leaf.dtype == jnp.float32, (case.name, name, leaf.dtype)
    if want.role == "bias":
      assert want.blocks == leaf.size, (case.name, name, want, leaf.shape)
  for prefix, axis in (case.layer_axes or {}).items():
    under = [name for name in leaves if name.startswith(prefix + "/")]
    assert under, f"{case.name}: layer_axes names {prefix!r}, which holds no leaf"
    sizes = {leaves[name].shape[axis] for name in under}
    assert len(sizes) == 1, f"{case.name}: leaves under {prefix!r} disagree on axis {axis}: {sizes}"


class _Tree:
  """Builds a nested dict of small random float32 arrays and its `expected` table together."""

  def __init__(self, seed: int):
    self._rng = np.random.default_rng(seed)
    self.params: dict = {}
    self.expected: dict[str, Expected] = {}

  def array(self, shape: Sequence[int]) -> jax.Array:
    return jnp.asarray(0.02 * self._rng.standard_normal(tuple(shape)), jnp.float32)

  def add(self, path: str, shape: Sequence[int], role: str, blocks: int) -> None:
    *parents, last = path.split("/")
    node = self.params
    for key in parents:
      node = node.setdefault(key, {})
    assert last not in node, path
    node[last] = self.array(shape)
    self.expected[path] = Expected(role, blocks)


def _fill(abstract: Any, seed: int) -> Any:
  """Replaces every jax.ShapeDtypeStruct leaf with a small random array of that shape and dtype.

  The library-built families are traced with eval_shape (names and shapes come from the real
  library) and then filled from NumPy, which skips compiling the libraries' initializers.
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), abstract,
      is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


# ------------------------------------------------------------------------------------------------
# 1. Hugging Face Flax GPT-2


def gpt2_hf_flax() -> FamilyCase:
  """Hugging Face `FlaxGPT2LMHeadModel(...).params`, tied head.

  Source: huggingface/transformers src/transformers/models/gpt2/modeling_flax_gpt2.py.
  FlaxGPT2LMHeadModule.transformer -> FlaxGPT2Module: wte, wpe (nn.Embed, `embedding`), h
  (FlaxGPT2BlockCollection: blocks named str(i)), ln_f (nn.LayerNorm: scale, bias). Block: ln_1,
  attn, ln_2, mlp. FlaxConv1D's kernel is `(features, in)`, i.e. (out, in), transposed in the
  forward pass, plus `bias (features,)`; attn.c_attn has features 3 * D (q, k, v stacked on the out
  axis, each split into H heads of D // H), attn.c_proj D; mlp.c_fc n_inner, mlp.c_proj D. With
  tie_word_embeddings (GPT-2's default) lm_head is applied with wte's embedding and owns no leaf.
  head_dim = D // H is fixed by the source, so D = 24, H = 4, Dh = 6.
  """
  V, P, D, H, F, L = 50, 12, 24, 4, 40, 3
  t = _Tree(1)
  t.add("transformer/wte/embedding", (V, D), "token_embedding", V)
  t.add("transformer/wpe/embedding", (P, D), "position_embedding", 1)
  for i in range(L):
    p = f"transformer/h/{i}"
    t.add(f"{p}/ln_1/scale", (D,), "norm", 1)
    t.add(f"{p}/ln_1/bias", (D,), "bias", D)
    t.add(f"{p}/attn/c_attn/kernel", (3 * D, D), "qkv_fused", H + H + D)
    t.add(f"{p}/attn/c_attn/bias", (3 * D,), "bias", 3 * D)
    t.add(f"{p}/attn/c_proj/kernel", (D, D), "attn_out", D)
    t.add(f"{p}/attn/c_proj/bias", (D,), "bias", D)
    t.add(f"{p}/ln_2/scale", (D,), "norm", 1)
    t.add(f"{p}/ln_2/bias", (D,), "bias", D)
    t.add(f"{p}/mlp/c_fc/kernel", (F, D), "mlp", F)
    t.add(f"{p}/mlp/c_fc/bias", (F,), "bias", F)
    t.add(f"{p}/mlp/c_proj/kernel", (D, F), "mlp", D)
    t.add(f"{p}/mlp/c_proj/bias", (D,), "bias", D)
  t.add("transformer/ln_f/scale", (D,), "norm", 1)
  t.add("transformer/ln_f/bias", (D,), "bias", D)
  return FamilyCase("gpt2_hf_flax", t.params, {"num_heads": H}, None, t.expected)


# ------------------------------------------------------------------------------------------------
# 2. Hugging Face Flax Llama (grouped-query attention)


def llama_hf_flax() -> FamilyCase:
  """Hugging Face `FlaxLlamaForCausalLM(...).params` with grouped-query attention.

  Source: huggingface/transformers src/transformers/models/llama/modeling_flax_llama.py (the version
  with num_key_value_heads). FlaxLlamaForCausalLMModule: model (FlaxLlamaModule: embed_tokens
  nn.Embed, layers = FlaxLlamaLayerCollection with blocks named str(i), norm FlaxLlamaRMSNorm whose
  param is `weight`), lm_head nn.Dense(vocab, use_bias=False). Attention: q_proj Dense(H * Dh),
  k_proj / v_proj Dense(K * Dh), o_proj Dense(D), use_bias=config.attention_bias (False); MLP:
  gate_proj, up_proj Dense(F), down_proj Dense(D), no bias. flax Dense kernels are (in, out).
  head_dim = hidden_size // num_attention_heads is fixed by the source, so D = 24, H = 4, Dh = 6.
  """
  V, D, H, K, F, L = 50, 24, 4, 2, 40, 3
  Dh = D // H
  t = _Tree(2)
  t.add("model/embed_tokens/embedding", (V, D), "token_embedding", V)
  for i in range(L):
    p = f"model/layers/{i}"
    t.add(f"{p}/self_attn/q_proj/kernel", (D, H * Dh), "query", H)
    t.add(f"{p}/self_attn/k_proj/kernel", (D, K * Dh), "key", K)
    t.add(f"{p}/self_attn/v_proj/kernel", (D, K * Dh), "value", K * Dh)
    t.add(f"{p}/self_attn/o_proj/kernel", (H * Dh, D), "attn_out", D)
    t.add(f"{p}/mlp/gate_proj/kernel", (D, F), "mlp", F)
    t.add(f"{p}/mlp/up_proj/kernel", (D, F), "mlp", F)
    t.add(f"{p}/mlp/down_proj/kernel", (F, D), "mlp", D)
    t.add(f"{p}/input_layernorm/weight", (D,), "norm", 1)
    t.add(f"{p}/post_attention_layernorm/weight", (D,), "norm", 1)
  t.add("model/norm/weight", (D,), "norm", 1)
  t.add("lm_head/kernel", (D, V), "lm_head", V)
  return FamilyCase("llama_hf_flax", t.params, {"head_dim": Dh}, None, t.expected)


# ------------------------------------------------------------------------------------------------
# 3. Gemma, linen (google-deepmind/gemma)


def gemma3_linen() -> FamilyCase:
  """google-deepmind/gemma `gm.nn.Gemma3_*` linen params (GQA, post norms, QK norm), tied head.

  Source: google-deepmind/gemma gemma/gm/nn/_transformer.py (Transformer.setup: embedder,
  blocks named `layer_{i}`, final_norm), gemma/gm/nn/_modules.py (Embedder param
  `input_embedding (V, D)`; Attention: q_einsum `w (H, D, Dh)` and kv_einsum `w (2, K, D, Dh)` when
  K != H, attn_vec_einsum `w (H, Dh, D)`, _query_norm / _key_norm RMSNorm(Dh) when use_qk_norm;
  FeedForward: `gating_einsum` and `linear` sit directly in `mlp` (nn.share_scope, no `/w`),
  gating_einsum (2, F, D) when transpose_gating_einsum (all Gemma 2 9B/27B and Gemma 3 configs in
  gemma/gm/nn/_gemma.py), linear (F, D); Block: pre_attention_norm, post_attention_norm,
  pre_ffw_norm, post_ffw_norm), gemma/gm/nn/_layers.py (RMSNorm param `scale (D,)`). The logits use
  the embedding table (Embedder.decode), so there is no head leaf.
  """
  V, D, H, K, Dh, F, L = 50, 16, 4, 2, 6, 40, 3
  t = _Tree(3)
  t.add("embedder/input_embedding", (V, D), "token_embedding", V)
  for i in range(L):
    p = f"layer_{i}"
    t.add(f"{p}/pre_attention_norm/scale", (D,), "norm", 1)
    t.add(f"{p}/attn/q_einsum/w", (H, D, Dh), "query", H)
    t.add(f"{p}/attn/kv_einsum/w", (2, K, D, Dh), "kv_fused", K + K * Dh)
    t.add(f"{p}/attn/attn_vec_einsum/w", (H, Dh, D), "attn_out", D)
    t.add(f"{p}/attn/_query_norm/scale", (Dh,), "norm", 1)
    t.add(f"{p}/attn/_key_norm/scale", (Dh,), "norm", 1)
    t.add(f"{p}/post_attention_norm/scale", (D,), "norm", 1)
    t.add(f"{p}/pre_ffw_norm/scale", (D,), "norm", 1)
    t.add(f"{p}/mlp/gating_einsum", (2, F, D), "gate_up_fused", F + F)
    t.add(f"{p}/mlp/linear", (F, D), "mlp", D)
    t.add(f"{p}/post_ffw_norm/scale", (D,), "norm", 1)
  t.add("final_norm/scale", (D,), "norm", 1)
  return FamilyCase("gemma3_linen", t.params, {}, None, t.expected)


def gemma1_linen() -> FamilyCase:
  """google-deepmind/gemma linen params in the Gemma 1 7B layout: K == H, so a fused qkv_einsum.

  Source: google-deepmind/gemma gemma/gm/nn/_modules.py (Attention.use_qkv_einsum when
  num_kv_heads == num_heads: qkv_einsum `w (3, H, D, Dh)`; FeedForward with
  transpose_gating_einsum=False: gating_einsum (2, D, F)); gemma 7B config (num_heads =
  num_kv_heads = 16, use_post_attn_norm = use_post_ffw_norm = False, transpose_gating_einsum
  default False) from gemma/transformer.py before commit b5aef38. No QK norm, no post norms.
  """
  V, D, H, Dh, F, L = 50, 16, 4, 6, 40, 3
  t = _Tree(4)
  t.add("embedder/input_embedding", (V, D), "token_embedding", V)
  for i in range(L):
    p = f"layer_{i}"
    t.add(f"{p}/pre_attention_norm/scale", (D,), "norm", 1)
    t.add(f"{p}/attn/qkv_einsum/w", (3, H, D, Dh), "qkv_fused", H + H + H * Dh)
    t.add(f"{p}/attn/attn_vec_einsum/w", (H, Dh, D), "attn_out", D)
    t.add(f"{p}/pre_ffw_norm/scale", (D,), "norm", 1)
    t.add(f"{p}/mlp/gating_einsum", (2, D, F), "gate_up_fused", F + F)
    t.add(f"{p}/mlp/linear", (F, D), "mlp", D)
  t.add("final_norm/scale", (D,), "norm", 1)
  return FamilyCase("gemma1_linen", t.params, {}, None, t.expected)


# ------------------------------------------------------------------------------------------------
# 4. Gemma, NNX (flax examples/gemma)


def gemma_nnx() -> FamilyCase:
  """The flax NNX Gemma example (Gemma 3 style: GQA, post norms, QK norm), built with real nnx.

  Source: google/flax examples/gemma/transformer.py (Transformer: embedder = ScaledEmbed, an
  nnx.Embed, param `embedding (V, D)`; layers = nnx.List of Blocks; final_norm), examples/gemma/
  modules.py (Attention: attn_vec_einsum nnx.Einsum kernel_shape (H, Dh, D); q_einsum (H, D, Dh) and
  kv_einsum (2, K, D, Dh) when K != H; _query_norm / _key_norm RMSNorm(head_dim) when use_qk_norm;
  FeedForward: gate_proj, up_proj nnx.Linear(D, F), down_proj nnx.Linear(F, D), use_bias=False;
  Block: pre_attention_norm, attn, post_attention_norm, pre_ffw_norm, mlp, post_ffw_norm),
  examples/gemma/layers.py (RMSNorm: `scale` nnx.Param (dim,), zeros). nnx.Einsum's param is
  `kernel`, nnx.Linear's `kernel` is (in, out). The tree is `nnx.to_pure_dict(nnx.state(model,
  nnx.Param))`: plain dicts, with the nnx.List indices as int keys (`layers/0/...`). Tied head.
  The module classes below repeat the example's attribute names and shapes (checked against the
  example's own Transformer when this fixture was written); the model is traced with
  nnx.eval_shape and filled by `_fill`.
  """
  from flax import nnx

  V, D, H, K, Dh, F, L = 50, 16, 4, 2, 6, 40, 3

  class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
      self.scale = nnx.Param(nnx.initializers.zeros_init()(rngs.params(), (dim,), jnp.float32))

  class Attention(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
      self.attn_vec_einsum = nnx.Einsum("BTNH,NHD->BTD", (H, Dh, D), rngs=rngs)
      self.q_einsum = nnx.Einsum("BTD,NDH->BTNH", (H, D, Dh), rngs=rngs)
      self.kv_einsum = nnx.Einsum("BTD,CKDH->CBTKH", (2, K, D, Dh), rngs=rngs)
      self._query_norm = RMSNorm(Dh, rngs=rngs)
      self._key_norm = RMSNorm(Dh, rngs=rngs)

  class FeedForward(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
      self.gate_proj = nnx.Linear(D, F, use_bias=False, rngs=rngs)
      self.up_proj = nnx.Linear(D, F, use_bias=False, rngs=rngs)
      self.down_proj = nnx.Linear(F, D, use_bias=False, rngs=rngs)

  class Block(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
      self.pre_attention_norm = RMSNorm(D, rngs=rngs)
      self.attn = Attention(rngs=rngs)
      self.post_attention_norm = RMSNorm(D, rngs=rngs)
      self.pre_ffw_norm = RMSNorm(D, rngs=rngs)
      self.mlp = FeedForward(rngs=rngs)
      self.post_ffw_norm = RMSNorm(D, rngs=rngs)

  class Transformer(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
      self.embedder = nnx.Embed(V, D, rngs=rngs)
      self.layers = nnx.List([Block(rngs=rngs) for _ in range(L)])
      self.final_norm = RMSNorm(D, rngs=rngs)

  model = nnx.eval_shape(lambda: Transformer(rngs=nnx.Rngs(5)))
  params = _fill(nnx.to_pure_dict(nnx.state(model, nnx.Param)), 5)
  expected = {"embedder/embedding": Expected("token_embedding", V)}
  for i in range(L):
    p = f"layers/{i}"
    expected.update({
        f"{p}/pre_attention_norm/scale": Expected("norm", 1),
        f"{p}/attn/q_einsum/kernel": Expected("query", H),
        f"{p}/attn/kv_einsum/kernel": Expected("kv_fused", K + K * Dh),
        f"{p}/attn/attn_vec_einsum/kernel": Expected("attn_out", D),
        f"{p}/attn/_query_norm/scale": Expected("norm", 1),
        f"{p}/attn/_key_norm/scale": Expected("norm", 1),
        f"{p}/post_attention_norm/scale": Expected("norm", 1),
        f"{p}/pre_ffw_norm/scale": Expected("norm", 1),
        f"{p}/mlp/gate_proj/kernel": Expected("mlp", F),
        f"{p}/mlp/up_proj/kernel": Expected("mlp", F),
        f"{p}/mlp/down_proj/kernel": Expected("mlp", D),
        f"{p}/post_ffw_norm/scale": Expected("norm", 1),
    })
  expected["final_norm/scale"] = Expected("norm", 1)
  return FamilyCase("gemma_nnx", params, {}, None, expected)


# ------------------------------------------------------------------------------------------------
# 5. MaxText, scanned llama2 decoder


def maxtext_llama2_scanned() -> FamilyCase:
  """MaxText llama2 decoder with scan_layers=True, param_scan_axis=1 (the base.yml defaults).

  Sources (AI-Hypercomputer/maxtext): src/maxtext/models/models.py (token_embedder, decoder),
  src/maxtext/layers/embeddings.py (Embed `embedding (V, D)`), src/maxtext/layers/decoders.py
  (scan_decoder_layers: nn.scan with variable_axes params=param_scan_axis, named "layers";
  decoder_norm; logits_dense when logits_via_embedding is false, kernel (D, V)),
  src/maxtext/models/llama2.py (pre_self_attention_layer_norm, self_attention,
  post_self_attention_layer_norm, mlp), src/maxtext/layers/attentions.py (query DenseGeneral
  D -> (H, Dh), key / value D -> (K, Dh), out (H, Dh) -> D, no bias), src/maxtext/layers/linears.py
  (MlpBlock wi_0, wi_1 (D, F) for activations ["silu", "linear"], wo (F, D); DenseGeneral kernel =
  in_features_shape + out_features_shape), src/maxtext/layers/normalizations.py (RMSNorm `scale`).
  Shapes with the layer axis at 1 as in src/maxtext/checkpoint_conversion/standalone_scripts/
  llama_or_mistral_ckpt.py ("[embed, layer, q, head_dim]", "[q, layer, head_dim, embed]", norms
  transposed to (D, L), wi/wo transposed (1, 0, 2)). The tree is MaxText's TrainState.params, the
  linen variables dict, whose root key is "params".
  """
  V, D, H, K, Dh, F, L = 50, 16, 4, 2, 6, 40, 3
  t = _Tree(6)
  t.add("params/token_embedder/embedding", (V, D), "token_embedding", V)
  p = "params/decoder/layers"
  t.add(f"{p}/pre_self_attention_layer_norm/scale", (D, L), "norm", L)
  t.add(f"{p}/self_attention/query/kernel", (D, L, H, Dh), "query", L * H)
  t.add(f"{p}/self_attention/key/kernel", (D, L, K, Dh), "key", L * K)
  t.add(f"{p}/self_attention/value/kernel", (D, L, K, Dh), "value", L * K * Dh)
  t.add(f"{p}/self_attention/out/kernel", (H, L, Dh, D), "attn_out", L * D)
  t.add(f"{p}/post_self_attention_layer_norm/scale", (D, L), "norm", L)
  t.add(f"{p}/mlp/wi_0/kernel", (D, L, F), "mlp", L * F)
  t.add(f"{p}/mlp/wi_1/kernel", (D, L, F), "mlp", L * F)
  t.add(f"{p}/mlp/wo/kernel", (F, L, D), "mlp", L * D)
  t.add("params/decoder/decoder_norm/scale", (D,), "norm", 1)
  t.add("params/decoder/logits_dense/kernel", (D, V), "lm_head", V)
  return FamilyCase("maxtext_llama2_scanned", t.params, {}, {p: 1}, t.expected)


# ------------------------------------------------------------------------------------------------
# 6. nanodo


def _nanodo_tree() -> tuple[_Tree, dict[str, tuple]]:
  V, C, D, H, F, N = 50, 12, 24, 4, 40, 3
  Dh = D // H
  t = _Tree(7)
  boxes = {}  # leaf path -> fsdp.init partition names, for the boxed variant

  def add(path, shape, role, blocks, names=None):
    t.add(path, shape, role, blocks)
    if names is not None:
      boxes[path] = names

  add("embed/embedding", (V, D), "token_embedding", V, (None, "data"))
  add("pos_embed/embedding", (C, D), "position_embedding", 1, (None, "data"))
  for i in range(N):
    p = f"blocks_{i}"
    add(f"{p}/LayerNorm_0/scale", (D,), "norm", 1)
    add(f"{p}/CausalAttn_0/query/kernel", (D, H, Dh), "query", H, ("data", None, None))
    add(f"{p}/CausalAttn_0/key/kernel", (D, H, Dh), "key", H, ("data", None, None))
    add(f"{p}/CausalAttn_0/value/kernel", (D, H, Dh), "value", H * Dh, ("data", None, None))
    add(f"{p}/CausalAttn_0/attn_out_proj/kernel", (H, Dh, D), "attn_out", D, (None, None, "data"))
    add(f"{p}/LayerNorm_1/scale", (D,), "norm", 1)
    add(f"{p}/Mlp_0/Dense_0/kernel", (D, F), "mlp", F, ("data", None))
    add(f"{p}/Mlp_0/Dense_1/kernel", (F, D), "mlp", D, ("data", None))
  add("out_ln/scale", (D,), "norm", 1)
  return t, boxes


def nanodo() -> FamilyCase:
  """google-deepmind/nanodo `TransformerDo` params, fsdp_enabled=False (plain arrays), tied head.

  Source: google-deepmind/nanodo nanodo/model.py. TransformerDo.setup: embed, pos_embed (nn.Embed,
  `embedding`), blocks = [TBlock ...] (auto-named blocks_{i}), out_ln = nn.LayerNorm(
  use_bias=False); logits via embed.attend. TBlock (compact): LayerNorm_0, CausalAttn_0,
  LayerNorm_1, Mlp_0, all LayerNorms use_bias=False (scale only). CausalAttn: query / key / value
  nn.DenseGeneral(features=(H, Dh), axis=-1, use_bias=False) -> kernel (D, H, Dh); attn_out_proj
  DenseGeneral(D, axis=(-2, -1)) -> kernel (H, Dh, D). Mlp: Dense_0 (D, F), Dense_1 (F, D),
  use_bias=False. Dh = D // H is fixed by the source, so D = 24, H = 4, Dh = 6.
  """
  t, _ = _nanodo_tree()
  return FamilyCase("nanodo", t.params, {}, None, t.expected)


def nanodo_fsdp() -> FamilyCase:
  """nanodo with its default fsdp_enabled=True: kernels and tables are `nn.Partitioned` boxes.

  Source: google-deepmind/nanodo nanodo/fsdp.py (init wraps the embedding, attn_in_proj,
  attn_out_proj and mlp_kernel initializers in nn.with_partitioning; LayerNorm scales keep the
  default, unboxed init), nanodo/train.py (_init_train_state keeps module.init(...)["params"]
  boxed in TrainState.params). A box flattens to GetAttrKey("value"), so those leaves end in
  `/value`, e.g. `embed/embedding/value`.
  """
  from flax import linen as nn

  t, boxes = _nanodo_tree()

  def box(path, node):
    if isinstance(node, dict):
      return {k: box(f"{path}/{k}" if path else k, v) for k, v in node.items()}
    return nn.Partitioned(node, names=boxes[path]) if path in boxes else node

  expected = {(f"{k}/value" if k in boxes else k): v for k, v in t.expected.items()}
  return FamilyCase("nanodo_fsdp", box("", t.params), {}, None, expected)


# ------------------------------------------------------------------------------------------------
# 7. Equinox


_EQX_SIZES = (50, 16, 4, 6, 40, 3)  # V, D, H, Dh, F, L


@functools.cache
def _equinox_decoder_class() -> type:
  """The equinox Decoder class, made once so that every build has the same pytree structure."""
  import equinox as eqx

  V, D, H, Dh, F, L = _EQX_SIZES

  class Block(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, key):
      k_attn, k_fc1, k_fc2 = jax.random.split(key, 3)
      self.ln1 = eqx.nn.LayerNorm(D)
      self.attn = eqx.nn.MultiheadAttention(
          num_heads=H, query_size=D, qk_size=Dh, vo_size=Dh, use_query_bias=True,
          use_key_bias=True, use_value_bias=True, use_output_bias=True, key=k_attn)
      self.ln2 = eqx.nn.LayerNorm(D)
      self.fc1 = eqx.nn.Linear(D, F, key=k_fc1)
      self.fc2 = eqx.nn.Linear(F, D, key=k_fc2)

  class Decoder(eqx.Module):
    embed: eqx.nn.Embedding
    blocks: list
    ln_f: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key):
      k_embed, k_head, *k_blocks = jax.random.split(key, L + 2)
      self.embed = eqx.nn.Embedding(V, D, key=k_embed)
      self.blocks = [Block(k) for k in k_blocks]
      self.ln_f = eqx.nn.LayerNorm(D)
      self.head = eqx.nn.Linear(D, V, use_bias=False, key=k_head)

  return Decoder


def equinox_decoder() -> FamilyCase:
  """A small decoder made of real equinox modules; params as eqx.filter(model, eqx.is_array) gives.

  Source: patrick-kidger/equinox (installed 0.13.8) equinox/nn/_attention.py (MultiheadAttention:
  query_proj Linear(query_size, H * qk_size), key_proj Linear(key_size, H * qk_size), value_proj
  Linear(value_size, H * vo_size), output_proj Linear(H * vo_size, output_size), biases off by
  default and switched on here), equinox/nn/_linear.py (Linear `weight (out, in)`, `bias (out,)`),
  equinox/nn/_embedding.py (Embedding `weight (V, D)`), equinox/nn/_normalisation.py (LayerNorm
  `weight`, `bias`). Blocks are a Python list (`blocks/0/...`), the head is untied. qk_size =
  vo_size = 6 while D // H = 4, so the head size must be given: kwargs carry both num_heads and
  head_dim (the (H * Dh, D) weights need either one). The tree is traced with
  eqx.filter_eval_shape and filled by `_fill`; its structure, names and shapes are those of
  eqx.filter(Decoder(key), eqx.is_array) (checked when this fixture was written).
  """
  import equinox as eqx

  V, D, H, Dh, F, L = _EQX_SIZES
  model = eqx.filter_eval_shape(_equinox_decoder_class(), jax.random.key(8))
  params = _fill(eqx.filter(model, lambda x: isinstance(x, jax.ShapeDtypeStruct)), 8)
  expected = {"embed/weight": Expected("token_embedding", V)}
  for i in range(L):
    p = f"blocks/{i}"
    expected.update({
        f"{p}/ln1/weight": Expected("norm", 1),
        f"{p}/ln1/bias": Expected("bias", D),
        f"{p}/attn/query_proj/weight": Expected("query", H),
        f"{p}/attn/query_proj/bias": Expected("bias", H * Dh),
        f"{p}/attn/key_proj/weight": Expected("key", H),
        f"{p}/attn/key_proj/bias": Expected("bias", H * Dh),
        f"{p}/attn/value_proj/weight": Expected("value", H * Dh),
        f"{p}/attn/value_proj/bias": Expected("bias", H * Dh),
        f"{p}/attn/output_proj/weight": Expected("attn_out", D),
        f"{p}/attn/output_proj/bias": Expected("bias", D),
        f"{p}/ln2/weight": Expected("norm", 1),
        f"{p}/ln2/bias": Expected("bias", D),
        f"{p}/fc1/weight": Expected("mlp", F),
        f"{p}/fc1/bias": Expected("bias", F),
        f"{p}/fc2/weight": Expected("mlp", D),
        f"{p}/fc2/bias": Expected("bias", D),
    })
  expected["ln_f/weight"] = Expected("norm", 1)
  expected["ln_f/bias"] = Expected("bias", D)
  expected["head/weight"] = Expected("lm_head", V)
  return FamilyCase("equinox_decoder", params, {"num_heads": H, "head_dim": Dh}, None, expected)


# ------------------------------------------------------------------------------------------------
# 8. Haiku


def haiku_transformer() -> FamilyCase:
  """The Haiku example language model, with the real dm-haiku library (hk.transform(...).init).

  Source: google-deepmind/dm-haiku examples/transformer/model.py: LanguageModel (hk.Embed
  `embeddings (V, D)`; hk.get_parameter('positional_embeddings', [seq_len, D]) owned by the
  language_model module itself; untied head hk.Linear(V) with bias) and Transformer (per layer
  hk.MultiHeadAttention(num_heads, key_size, model_size) and an hk.Sequential of two hk.Linear,
  widening factor 4; hk.LayerNorm(create_scale, create_offset) before each and at the end, all
  default-named); examples/transformer/train.py makes the Transformer outside the LanguageModel,
  so its modules sit under `transformer/`, not `language_model/transformer/`. Haiku's own naming
  gives flat module keys holding `w (in, out)` and `b`: `transformer/multi_head_attention_1/query`;
  the MLP's hk.Linear are made in Transformer.__call__ before hk.Sequential gets them, so they are
  `transformer/linear`, `transformer/linear_1`, ... (two per layer) and hk.Sequential owns nothing;
  the 2 L + 1 LayerNorms are `transformer/layer_norm`, `..._1`, ... `..._{2L}`. key_size = 6 while
  D // H = 4, so kwargs give head_dim. Traced with jax.eval_shape and filled by `_fill` (same tree
  as the real init).
  """
  import haiku as hk

  V, T, D, H, Dh, L = 50, 12, 16, 4, 6, 3
  F = 4 * D

  def layer_norm(x):
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)

  class Transformer(hk.Module):
    def __call__(self, h):
      for _ in range(L):
        h_norm = layer_norm(h)
        h = h + hk.MultiHeadAttention(num_heads=H, key_size=Dh, model_size=D,
                                      w_init=hk.initializers.VarianceScaling(2 / L))(
                                          h_norm, h_norm, h_norm)
        h = h + hk.Sequential([hk.Linear(F), jax.nn.gelu, hk.Linear(D)])(layer_norm(h))
      return layer_norm(h)

  class LanguageModel(hk.Module):
    def __init__(self, transformer):
      super().__init__()
      self.transformer = transformer

    def __call__(self, tokens):
      x = hk.Embed(V, embed_dim=D)(tokens)
      x = x + hk.get_parameter("positional_embeddings", [tokens.shape[1], D],
                               init=hk.initializers.TruncatedNormal(0.02))
      return hk.Linear(V)(self.transformer(x))

  # As in the example's train.py, the Transformer is made outside the LanguageModel.
  init = hk.transform(lambda tokens: LanguageModel(Transformer())(tokens)).init
  params = _fill(jax.eval_shape(init, jax.random.PRNGKey(9), jnp.zeros((1, T), jnp.int32)), 9)

  def suffix(i):
    return "" if i == 0 else f"_{i}"

  expected = {
      "language_model/embed/embeddings": Expected("token_embedding", V),
      "language_model/positional_embeddings": Expected("position_embedding", 1),
      "language_model/linear/w": Expected("lm_head", V),
      "language_model/linear/b": Expected("bias", V),
  }
  for i in range(L):
    mha = f"transformer/multi_head_attention{suffix(i)}"
    expected.update({
        f"{mha}/query/w": Expected("query", H),
        f"{mha}/query/b": Expected("bias", H * Dh),
        f"{mha}/key/w": Expected("key", H),
        f"{mha}/key/b": Expected("bias", H * Dh),
        f"{mha}/value/w": Expected("value", H * Dh),
        f"{mha}/value/b": Expected("bias", H * Dh),
        f"{mha}/linear/w": Expected("attn_out", D),
        f"{mha}/linear/b": Expected("bias", D),
    })
    up, down = f"transformer/linear{suffix(2 * i)}", f"transformer/linear{suffix(2 * i + 1)}"
    expected.update({
        f"{up}/w": Expected("mlp", F),
        f"{up}/b": Expected("bias", F),
        f"{down}/w": Expected("mlp", D),
        f"{down}/b": Expected("bias", D),
    })
  for i in range(2 * L + 1):
    expected[f"transformer/layer_norm{suffix(i)}/scale"] = Expected("norm", 1)
    expected[f"transformer/layer_norm{suffix(i)}/offset"] = Expected("bias", D)
  return FamilyCase("haiku_transformer", params, {"head_dim": Dh}, None, expected)


# ------------------------------------------------------------------------------------------------
# 9. A user's own scanned GPT


def scanned_gpt() -> FamilyCase:
  """A GPT written by a user as one nested dict, per-layer leaves stacked on axis 0 under `blocks`.

  No upstream source: flax-style names (`kernel` (in, out), `scale`, `bias`, `embedding`), heads as
  explicit axes, grouped-query attention (K = 2 < H = 4), learned positions, untied head.
  """
  V, P, D, H, K, Dh, F, L = 50, 12, 16, 4, 2, 6, 40, 3
  t = _Tree(10)
  t.add("wte/embedding", (V, D), "token_embedding", V)
  t.add("wpe/embedding", (P, D), "position_embedding", 1)
  t.add("blocks/ln1/scale", (L, D), "norm", L)
  t.add("blocks/ln1/bias", (L, D), "bias", L * D)
  t.add("blocks/attn/query/kernel", (L, D, H, Dh), "query", L * H)
  t.add("blocks/attn/key/kernel", (L, D, K, Dh), "key", L * K)
  t.add("blocks/attn/value/kernel", (L, D, K, Dh), "value", L * K * Dh)
  t.add("blocks/attn/out/kernel", (L, H, Dh, D), "attn_out", L * D)
  t.add("blocks/ln2/scale", (L, D), "norm", L)
  t.add("blocks/ln2/bias", (L, D), "bias", L * D)
  t.add("blocks/mlp/fc1/kernel", (L, D, F), "mlp", L * F)
  t.add("blocks/mlp/fc1/bias", (L, F), "bias", L * F)
  t.add("blocks/mlp/fc2/kernel", (L, F, D), "mlp", L * D)
  t.add("blocks/mlp/fc2/bias", (L, D), "bias", L * D)
  t.add("ln_f/scale", (D,), "norm", 1)
  t.add("ln_f/bias", (D,), "bias", D)
  t.add("lm_head/kernel", (D, V), "lm_head", V)
  return FamilyCase("scanned_gpt", t.params, {}, {"blocks": 0}, t.expected)


ALL_CASES: list[Callable[[], FamilyCase]] = [
    gpt2_hf_flax,
    llama_hf_flax,
    gemma3_linen,
    gemma1_linen,
    gemma_nnx,
    maxtext_llama2_scanned,
    nanodo,
    nanodo_fsdp,
    equinox_decoder,
    haiku_transformer,
    scanned_gpt,
]
