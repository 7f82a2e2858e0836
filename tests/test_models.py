"""Tests of the transformer (GPT-2 and Llama presets): shapes, counts, causality, numerics,
sharding."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax.models import (
    RopeScaling,
    Transformer,
    create_model,
    from_preset,
    presets,
    rope,
)
from bigmodel_jax.models.attention import causal_attention

TINY = dict(vocab_size=64, num_layers=2, num_heads=4, head_dim=8, embed_dim=32, mlp_dim=64,
            max_seq_len=16)
TINY_GPT2 = from_preset("gpt2", num_kv_heads=4, tie_embeddings=True, **TINY)
TINY_LLAMA = from_preset("llama", num_kv_heads=2, tie_embeddings=False, **TINY)
# No preset: RMSNorm, GELU, learned positions, biases, QK-norm and both soft-caps.
TINY_MIX = dataclasses.replace(TINY_LLAMA, mlp="gelu", positions="learned", use_bias=True,
                               qk_norm=True, attn_logit_softcap=5.0, final_logit_softcap=10.0)
TINY_CONFIGS = pytest.mark.parametrize("config", [TINY_GPT2, TINY_LLAMA, TINY_MIX],
                                       ids=["gpt2", "llama", "mix"])

GPT2_124M = from_preset(
    "gpt2", vocab_size=50257, num_layers=12, num_heads=12, num_kv_heads=12,
    head_dim=64, embed_dim=768, mlp_dim=3072, max_seq_len=1024, tie_embeddings=True)
LLAMA2_7B = from_preset(
    "llama", vocab_size=32000, num_layers=32, num_heads=32, num_kv_heads=32,
    head_dim=128, embed_dim=4096, mlp_dim=11008, max_seq_len=4096, tie_embeddings=False)
SMALL_GQA_LLAMA = from_preset(
    "llama", vocab_size=1000, num_layers=3, num_heads=8, num_kv_heads=2,
    head_dim=16, embed_dim=96, mlp_dim=256, max_seq_len=128, tie_embeddings=False,
    rope_scaling=(8.0, 1.0, 4.0, 64))

LOGICAL_NAMES = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "norm", "layers", None}
RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", "tensor"), ("mlp", "tensor"),
         ("heads", "tensor"), ("kv_heads", "tensor"), ("head_dim", None), ("norm", None),
         ("layers", None))


def _tokens(config, batch=2, length=8, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, config.vocab_size,
                            dtype=jnp.int32)


@functools.cache
def _model(config):
  """A model per config, created once (tests never mutate it)."""
  return create_model(config, nnx.Rngs(0))


@nnx.jit
def _forward(model, tokens, positions=None):
  return model(tokens, positions)


def _abstract_params(config):
  model = nnx.eval_shape(lambda: create_model(config, nnx.Rngs(0)))
  return nnx.state(model, nnx.Param)


def _loss_fn(graphdef, tokens):
  """Next-token cross-entropy as a function of the parameter state."""

  def loss(params):
    logits = nnx.merge(graphdef, params)(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  return loss


@pytest.mark.parametrize("config, expected", [(GPT2_124M, 124_439_808),
                                              (LLAMA2_7B, 6_738_415_616),
                                              (SMALL_GQA_LLAMA, None)],
                         ids=["gpt2-124m", "llama2-7b", "small-gqa-llama"])
def test_param_count(config, expected):
  params = _abstract_params(config)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  if expected is not None:
    assert count == expected
  assert config.num_params() == count


def test_param_tree_paths_and_shapes():
  shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(_abstract_params(TINY_LLAMA)))
  layers = shapes["layers"]
  assert shapes["embed"]["embedding"] == (64, 32)
  assert shapes["lm_head"]["kernel"] == (32, 64)
  assert shapes["final_norm"] == {"scale": (32,)}
  assert layers["attn"]["query"] == {"kernel": (2, 32, 4, 8)}
  assert layers["attn"]["key"] == {"kernel": (2, 32, 2, 8)}
  assert layers["attn"]["value"] == {"kernel": (2, 32, 2, 8)}
  assert layers["attn"]["out"] == {"kernel": (2, 4, 8, 32)}
  assert layers["mlp"] == {"gate": {"kernel": (2, 32, 64)}, "up": {"kernel": (2, 32, 64)},
                           "down": {"kernel": (2, 64, 32)}}
  assert layers["attn_norm"] == layers["mlp_norm"] == {"scale": (2, 32)}

  shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(_abstract_params(TINY_GPT2)))
  layers = shapes["layers"]
  assert "lm_head" not in shapes
  assert shapes["pos_embed"]["embedding"] == (16, 32)
  assert shapes["final_norm"] == {"scale": (32,), "bias": (32,)}
  assert layers["attn"]["query"] == {"kernel": (2, 32, 4, 8), "bias": (2, 4, 8)}
  assert layers["attn"]["out"] == {"kernel": (2, 4, 8, 32), "bias": (2, 32)}
  assert layers["mlp"] == {"up": {"kernel": (2, 32, 64), "bias": (2, 64)},
                           "down": {"kernel": (2, 64, 32), "bias": (2, 32)}}


@TINY_CONFIGS
def test_output_shape_dtype_and_no_extra_state(config):
  model = _model(config)
  logits = _forward(model, _tokens(config))
  assert logits.shape == (2, 8, config.vocab_size)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  _, _, rest = nnx.split(model, nnx.Param, ...)
  assert not jax.tree.leaves(rest)


@pytest.mark.parametrize("config", [TINY_GPT2, TINY_LLAMA,
                                    dataclasses.replace(TINY_LLAMA, num_kv_heads=1)],
                         ids=["gpt2", "llama-gqa", "llama-mqa"])
def test_causal_masking(config):
  model = _model(config)
  tokens = _tokens(config)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % config.vocab_size)
  before, after = _forward(model, tokens), _forward(model, changed)
  np.testing.assert_allclose(before[:, :5], after[:, :5], atol=1e-6)
  assert not np.allclose(before[:, 5:], after[:, 5:])


@TINY_CONFIGS
def test_explicit_positions_match_default(config):
  model = _model(config)
  tokens = _tokens(config)
  positions = jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), tokens.shape)
  np.testing.assert_allclose(_forward(model, tokens), _forward(model, tokens, positions),
                             atol=1e-6)


def test_rope_is_relative():
  model = _model(TINY_LLAMA)
  tokens = _tokens(TINY_LLAMA)
  positions = jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), tokens.shape)
  np.testing.assert_allclose(_forward(model, tokens, positions),
                             _forward(model, tokens, positions + 5), atol=1e-4)


def test_llama3_rope_scaling():
  scaling = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=8192)
  plain = rope.inverse_frequencies(128, 500000.0)
  scaled = rope.inverse_frequencies(128, 500000.0, scaling)
  assert scaled[0] == plain[0]  # shortest wavelength is kept
  np.testing.assert_allclose(scaled[-1], plain[-1] / 8.0, rtol=1e-6)  # longest is slowed
  assert np.all(scaled <= plain)


@pytest.mark.parametrize("config, param_dtype", [
    (dataclasses.replace(TINY_GPT2, dtype="bfloat16"), jnp.float32),
    (dataclasses.replace(TINY_LLAMA, dtype="bfloat16", param_dtype="bfloat16"), jnp.bfloat16),
], ids=["gpt2-bf16-compute", "llama-bf16-params"])
def test_bfloat16(config, param_dtype):
  model = _model(config)
  params = nnx.state(model, nnx.Param)
  assert all(x.dtype == param_dtype for x in jax.tree.leaves(params))
  logits = _forward(model, _tokens(config))
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  reference = _forward(_model(dataclasses.replace(config, dtype="float32")), _tokens(config))
  np.testing.assert_allclose(logits, reference, atol=0.05)


@TINY_CONFIGS
@pytest.mark.parametrize("option", [dict(remat=True), dict(scan_unroll=2)],
                         ids=["remat", "scan_unroll"])
def test_execution_options_match(config, option):
  tokens = _tokens(config, length=9)
  results = []
  for changes in ({}, option):
    model = _model(dataclasses.replace(config, **changes))
    graphdef, params = nnx.split(model, nnx.Param)
    loss = _loss_fn(graphdef, tokens)
    results.append((_forward(model, tokens), jax.jit(jax.grad(loss))(params)))
  (logits, grads), (logits_option, grads_option) = results
  np.testing.assert_allclose(logits, logits_option, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, grads_option)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("length", [16, 37])
def test_blockwise_causal_attention_equals_one_block(kv_heads, length):
  q, k, v = (jax.random.normal(key, (2, length, h, 8)) for key, h in
             zip(jax.random.split(jax.random.key(0), 3), (4, kv_heads, kv_heads)))
  one_block = causal_attention(q, k, v, block=length)
  blocks = causal_attention(q, k, v, block=8)
  np.testing.assert_allclose(blocks, one_block, atol=1e-6)
  grad = jax.grad(lambda q, block: jnp.sum(causal_attention(q, k, v, block) ** 2))
  np.testing.assert_allclose(grad(q, 8), grad(q, length), atol=1e-5)


@TINY_CONFIGS
def test_every_param_has_logical_names(config):
  model = _model(config)
  model(_tokens(config))  # metadata must survive an eager scanned forward pass
  params = nnx.state(model, nnx.Param)
  for path, var in jax.tree.leaves_with_path(
      params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var.ndim, jax.tree_util.keystr(path)
    assert set(names) <= LOGICAL_NAMES, names
    if jax.tree_util.keystr(path).startswith("['layers']"):
      assert names[0] == "layers"
  with nn.logical_axis_rules(RULES):
    specs = nnx.get_partition_spec(params)
  for spec, var in zip(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)),
                       jax.tree.leaves(params)):
    assert isinstance(spec, PartitionSpec) and len(spec) == var.ndim


@TINY_CONFIGS
def test_sharded_forward_matches_unsharded(config):
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  model = _model(config)
  tokens = _tokens(config, batch=4)
  expected = _forward(model, tokens)

  graphdef, params = nnx.split(model, nnx.Param)
  with nn.logical_axis_rules(RULES):
    specs = nnx.get_partition_spec(params)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, PartitionSpec))
  params = jax.device_put(params, shardings)
  tokens = jax.device_put(tokens, NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
  embedding = params["embed"]["embedding"][...]
  assert embedding.sharding.spec == PartitionSpec("tensor", "fsdp")

  @jax.jit
  def forward(params, tokens):
    return nnx.merge(graphdef, params)(tokens)

  np.testing.assert_allclose(forward(params, tokens), expected, atol=1e-5)


# Not the mix: along the all-ones tangent its curvature changes fast enough that float32 finite
# differences at eps = 1e-3 miss by ~6% (float64 agrees with the exact product to 1e-5).
@pytest.mark.parametrize("config", [TINY_GPT2, TINY_LLAMA], ids=["gpt2", "llama"])
def test_forward_over_reverse(config):
  model = _model(config)
  graphdef, params = nnx.split(model, nnx.Param)
  loss = _loss_fn(graphdef, _tokens(config, length=9))
  tangent = jax.tree.map(jnp.ones_like, params)
  grad_and_hvp = jax.jit(lambda p, t: jax.jvp(jax.grad(loss), (p,), (t,)))
  grads, hvp = grad_and_hvp(params, tangent)
  assert jax.tree.structure(hvp) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((grads, hvp)))
  # Finite differences of the gradient along t: <t, H t> ~ (g(p + e t) - g(p - e t)) . t / 2e.
  eps = 1e-3
  shifted = [grad_and_hvp(jax.tree.map(lambda p, t, s=s: p + s * eps * t, params, tangent),
                          tangent)[0] for s in (1.0, -1.0)]
  fd = sum(jnp.vdot(a - b, t) for a, b, t in zip(*map(jax.tree.leaves, shifted),
                                                  jax.tree.leaves(tangent))) / (2 * eps)
  exact = sum(jnp.vdot(h, t) for h, t in zip(jax.tree.leaves(hvp), jax.tree.leaves(tangent)))
  np.testing.assert_allclose(exact, fd, rtol=2e-2)


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=6, num_kv_heads=4), r"num_heads \(6\) must be divisible by num_kv_heads \(4\)"),
    (dict(norm="batchnorm"), r"norm \('batchnorm'\)"),
    (dict(mlp="relu"), r"mlp \('relu'\)"),
    (dict(positions="alibi"), r"positions \('alibi'\)"),
    (dict(use_bias=1), r"use_bias \(1\)"),
    (dict(qk_norm=None), r"qk_norm \(None\)"),
    (dict(attn_logit_softcap=0.0), r"attn_logit_softcap \(0.0\)"),
    (dict(final_logit_softcap=-1), r"final_logit_softcap \(-1\)"),
    (dict(positions="learned", rope_scaling=(8.0, 1.0, 4.0, 64)),
     r"rope_scaling must be None with learned positions"),
    (dict(vocab_size=0), r"vocab_size \(0\)"),
    (dict(num_layers=-1), r"num_layers \(-1\)"),
    (dict(head_dim=7), r"head_dim \(7\)"),
    (dict(dtype="float33"), r"dtype \('float33'\)"),
    (dict(rope_scaling=(8.0, 4.0, 1.0, 64)), r"rope_scaling.high_freq_factor"),
])
def test_config_validation_names_field(changes, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(TINY_LLAMA, **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(embed_dim=100, num_heads=3, num_kv_heads=3),
     r"embed_dim \(100\) is not divisible by num_heads \(3\)"),
    (dict(head_dim=16), r"head_dim \(16\)"),
])
def test_gpt2_preset_checks_its_head_split(changes, message):
  with pytest.raises(ValueError, match=message):
    from_preset("gpt2", **{**TINY, "num_kv_heads": 4, "tie_embeddings": True, **changes})


def test_unknown_preset_is_named():
  with pytest.raises(ValueError, match=r"preset \('bert'\)"):
    presets.preset("bert")


def test_config_is_hashable_and_normalises_rope_scaling():
  config = dataclasses.replace(TINY_LLAMA, rope_scaling=(8.0, 1.0, 4.0, 64))
  assert isinstance(config.rope_scaling, RopeScaling)
  assert config == dataclasses.replace(TINY_LLAMA, rope_scaling=RopeScaling(8.0, 1.0, 4.0, 64))
  assert hash(config) == hash(dataclasses.replace(config))


def test_create_model_builds_the_transformer_of_the_features():
  assert type(create_model(TINY_GPT2, nnx.Rngs(0))) is Transformer
  assert type(create_model(TINY_LLAMA, nnx.Rngs(0))) is Transformer
  with pytest.raises(ValueError, match="norm"):
    dataclasses.replace(TINY_GPT2, norm="gpt2")
