"""The architecture as data: presets reproduce GPT-2 and Llama exactly, QK-norm and soft-caps
compute what they specify, custom feature mixes build and train, and no code outside the presets
and the Hugging Face mapping branches on a family's name."""

import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx, traverse_util

from bigmodel_jax import blocks, hf, sharding
from bigmodel_jax.models import LAYER_AXES, create_model, from_preset, presets, rope
from bigmodel_jax.models.attention import Attention, masked_attention
from bigmodel_jax.train import builders, checkpointing, config_checks, flops
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.state import init_train_state
from bigmodel_jax.train.step import make_train_step
from configs import default

TINY = dict(vocab_size=64, num_layers=2, num_heads=4, head_dim=8, embed_dim=32, mlp_dim=64,
            max_seq_len=16)
TOKENS = (jnp.arange(16, dtype=jnp.int32).reshape(2, 8) * 3) % 64

# The parameter trees of GPT2(...) and Llama(...) before the features replaced the names (commit
# 71c0669): path -> (shape, logical axis names); and the sum of squares of the seed-0 parameters
# and of the logits of TOKENS.
BEFORE = {
    "gpt2": ({
        "embed/embedding": ((64, 32), ("vocab", "embed")),
        "final_norm/bias": ((32,), ("norm",)),
        "final_norm/scale": ((32,), ("norm",)),
        "layers/attn/key/bias": ((2, 4, 8), ("layers", "kv_heads", "head_dim")),
        "layers/attn/key/kernel": ((2, 32, 4, 8), ("layers", "embed", "kv_heads", "head_dim")),
        "layers/attn/out/bias": ((2, 32), ("layers", "embed")),
        "layers/attn/out/kernel": ((2, 4, 8, 32), ("layers", "heads", "head_dim", "embed")),
        "layers/attn/query/bias": ((2, 4, 8), ("layers", "heads", "head_dim")),
        "layers/attn/query/kernel": ((2, 32, 4, 8), ("layers", "embed", "heads", "head_dim")),
        "layers/attn/value/bias": ((2, 4, 8), ("layers", "kv_heads", "head_dim")),
        "layers/attn/value/kernel": ((2, 32, 4, 8), ("layers", "embed", "kv_heads", "head_dim")),
        "layers/attn_norm/bias": ((2, 32), ("layers", "norm")),
        "layers/attn_norm/scale": ((2, 32), ("layers", "norm")),
        "layers/mlp/down/bias": ((2, 32), ("layers", "embed")),
        "layers/mlp/down/kernel": ((2, 64, 32), ("layers", "mlp", "embed")),
        "layers/mlp/up/bias": ((2, 64), ("layers", "mlp")),
        "layers/mlp/up/kernel": ((2, 32, 64), ("layers", "embed", "mlp")),
        "layers/mlp_norm/bias": ((2, 32), ("layers", "norm")),
        "layers/mlp_norm/scale": ((2, 32), ("layers", "norm")),
        "pos_embed/embedding": ((16, 32), (None, "embed")),
    }, 165.91624450683594, 16.885799407958984),
    "llama": ({
        "embed/embedding": ((64, 32), ("vocab", "embed")),
        "final_norm/scale": ((32,), ("norm",)),
        "layers/attn/key/kernel": ((2, 32, 2, 8), ("layers", "embed", "kv_heads", "head_dim")),
        "layers/attn/out/kernel": ((2, 4, 8, 32), ("layers", "heads", "head_dim", "embed")),
        "layers/attn/query/kernel": ((2, 32, 4, 8), ("layers", "embed", "heads", "head_dim")),
        "layers/attn/value/kernel": ((2, 32, 2, 8), ("layers", "embed", "kv_heads", "head_dim")),
        "layers/attn_norm/scale": ((2, 32), ("layers", "norm")),
        "layers/mlp/down/kernel": ((2, 64, 32), ("layers", "mlp", "embed")),
        "layers/mlp/gate/kernel": ((2, 32, 64), ("layers", "embed", "mlp")),
        "layers/mlp/up/kernel": ((2, 32, 64), ("layers", "embed", "mlp")),
        "layers/mlp_norm/scale": ((2, 32), ("layers", "norm")),
        "lm_head/kernel": ((32, 64), ("embed", "vocab")),
    }, 167.17227172851562, 13.122917175292969),
}
TINY_PRESETS = {"gpt2": from_preset("gpt2", num_kv_heads=4, **TINY),
                "llama": from_preset("llama", num_kv_heads=2, **TINY)}


def _params(model) -> dict:
  """path -> (shape, logical names) of every parameter."""
  state = nnx.state(model, nnx.Param)
  return {"/".join(str(k.key) for k in path): (v.shape, tuple(v.get_metadata()["out_sharding"]))
          for path, v in jax.tree.leaves_with_path(
              state, is_leaf=lambda x: isinstance(x, nnx.Variable))}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_presets_reproduce_the_previous_models_exactly(name):
  tree, squares, logit_squares = BEFORE[name]
  model = create_model(TINY_PRESETS[name], nnx.Rngs(0))
  assert _params(model) == tree
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  np.testing.assert_allclose(float(sum(jnp.sum(jnp.square(x)) for x in leaves)), squares,
                             rtol=1e-6)
  np.testing.assert_allclose(float(jnp.sum(model(TOKENS) ** 2)), logit_squares, rtol=1e-5)


def test_preset_fields_and_overrides():
  assert presets.preset("gpt2")["norm"] == "layernorm"
  assert presets.preset("llama")["mlp"] == "swiglu"
  config = from_preset("llama", num_kv_heads=2, qk_norm=True, **TINY)
  assert config.qk_norm and presets.matching(config) == ["qwen3"]
  assert presets.describe(config) == "qwen3"
  mix = dataclasses.replace(config, mlp="gelu", positions="learned", qk_norm=False)
  assert presets.matching(mix) == []
  assert presets.describe(mix) == "rmsnorm/gelu/learned/no bias"


def _manual_qk_norm(x, scale, eps):
  x32 = x.astype(jnp.float32)
  return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * scale


def test_qk_norm_equals_manual_computation():
  config = from_preset("qwen3", num_kv_heads=2, **TINY)
  with nnx.use_eager_sharding(False):
    attn = Attention(config, rngs=nnx.Rngs(0))
    plain = Attention(dataclasses.replace(config, qk_norm=False), rngs=nnx.Rngs(0))
  assert attn.query_norm.scale.shape == attn.key_norm.scale.shape == (8,)
  keys = jax.random.split(jax.random.key(1), 3)
  attn.query_norm.scale[...] = jax.random.uniform(keys[0], (8,), minval=0.5, maxval=1.5)
  attn.key_norm.scale[...] = jax.random.uniform(keys[1], (8,), minval=0.5, maxval=1.5)
  x = jax.random.normal(keys[2], (2, 6, 32))
  positions = jnp.broadcast_to(jnp.arange(6), (2, 6))

  q = jnp.einsum("bld,dhk->blhk", x, attn.query.kernel[...])
  k = jnp.einsum("bld,dhk->blhk", x, attn.key.kernel[...])
  v = jnp.einsum("bld,dhk->blhk", x, attn.value.kernel[...])
  q = _manual_qk_norm(q, attn.query_norm.scale[...], config.norm_eps)
  k = _manual_qk_norm(k, attn.key_norm.scale[...], config.norm_eps)
  inv_freq = rope.inverse_frequencies(8, config.rope_theta, None)
  q, k = rope.apply_rope(q, positions, inv_freq), rope.apply_rope(k, positions, inv_freq)
  k, v = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(8.0)
  logits = jnp.where(jnp.tril(jnp.ones((6, 6), bool)), logits, -jnp.inf)
  out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
  expected = jnp.einsum("blhk,hkd->bld", out, attn.out.kernel[...])
  np.testing.assert_allclose(attn(x, positions), expected, atol=1e-5)

  np.testing.assert_array_equal(plain.query.kernel[...], attn.query.kernel[...])
  assert not hasattr(plain, "query_norm")
  assert not np.allclose(plain(x, positions), expected, atol=1e-3)


def test_attention_softcap_equals_manual_computation():
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (10 * jax.random.normal(key, (1, 5, 2, 4)) for key in keys)
  mask = jnp.tril(jnp.ones((5, 5), bool))
  cap = 2.0
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
  capped = jnp.where(mask, cap * jnp.tanh(logits / cap), -jnp.inf)
  expected = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(capped, -1), v)
  np.testing.assert_allclose(masked_attention(q, k, v, mask, logit_cap=cap), expected, atol=1e-5)
  assert not np.allclose(masked_attention(q, k, v, mask), expected, atol=1e-3)
  # The grouped (5-D) path caps the same way.
  grouped = masked_attention(q, k[:, :, :1], v[:, :, :1], mask, logit_cap=cap)
  k1, v1 = (jnp.repeat(x[:, :, :1], 2, axis=2) for x in (k, v))
  np.testing.assert_allclose(grouped, masked_attention(q, k1, v1, mask, logit_cap=cap),
                             atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY_PRESETS))
def test_final_logit_softcap_bounds_the_logits(name):
  config = dataclasses.replace(TINY_PRESETS[name], final_logit_softcap=0.5,
                               attn_logit_softcap=1.0)
  model = create_model(config, nnx.Rngs(0))
  uncapped = create_model(dataclasses.replace(config, final_logit_softcap=None), nnx.Rngs(0))
  for m in (model, uncapped):  # the same parameters, scaled so that raw logits exceed the cap
    m.final_norm.scale[...] = 100 * m.final_norm.scale[...]
  logits, raw = model(TOKENS), uncapped(TOKENS)
  assert float(jnp.abs(raw).max()) > 1.0
  assert float(jnp.abs(logits).max()) <= 0.5
  np.testing.assert_allclose(logits, 0.5 * jnp.tanh(raw / 0.5), atol=1e-6)


def _custom_section():
  """rmsnorm + gelu + learned positions (no preset has it), with QK-norm and soft-caps."""
  c = default.get_config()
  c.model.update(architecture="gpt2", norm="rmsnorm", use_bias=False, qk_norm=True,
                 attn_logit_softcap=30.0, final_logit_softcap=15.0, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, embed_dim=32, mlp_dim=64, max_seq_len=16)
  c.opt.update(warmup_steps=0)
  return c


def test_custom_mix_builds_and_trains_a_step():
  c = _custom_section()
  config = builders.model_config(c.model, 64)
  assert (config.norm, config.mlp, config.positions, config.use_bias) == (
      "rmsnorm", "gelu", "learned", False)
  assert (config.qk_norm, config.attn_logit_softcap, config.final_logit_softcap) == (
      True, 30.0, 15.0)
  mesh, rules = builders.mesh_and_rules(c)
  optimizer, schedule = make_optimizer(c.opt, total_steps=10)
  graphdef, state, shardings = init_train_state(config, optimizer, mesh, rules, seed=0)
  flat = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
  assert {"pos_embed/embedding", "layers/attn/query_norm/scale", "layers/mlp/up/kernel"} <= set(
      flat)
  assert not any(p.endswith("bias") for p in flat) and "layers/mlp/gate/kernel" not in flat
  assert sum(x.size for x in flat.values()) == config.num_params()
  step = jax.jit(make_train_step(graphdef, optimizer, schedule, 1),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, None))
  tokens = np.random.default_rng(0).integers(0, 64, (8, 17), dtype=np.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "weights": np.ones((8, 16), np.float32)}
  new_state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
  assert np.isfinite(float(metrics["loss"]))
  new_flat = traverse_util.flatten_dict(jax.device_get(new_state.params), sep="/")
  assert not np.array_equal(new_flat["layers/attn/query_norm/scale"],
                            flat["layers/attn/query_norm/scale"])
  lookup = config.max_seq_len * config.embed_dim  # tied head: only the position table
  assert flops.flops_per_token(config, 16) == 6.0 * (config.num_params() - lookup) + (
      12 * 2 * 4 * 8 * 16)


def test_qk_norm_scales_are_sharded_and_partitioned_as_norm_scales():
  config = from_preset("qwen3", num_kv_heads=2, **TINY)
  model = create_model(config, nnx.Rngs(0))
  tree = _params(model)
  assert tree["layers/attn/query_norm/scale"] == ((2, 8), ("layers", "head_dim"))
  assert tree["layers/attn/key_norm/scale"] == ((2, 8), ("layers", "head_dim"))
  c = default.get_config()
  assert {name for _, names in tree.values() for name in names} <= {
      name for name, _ in c.sharding_rules} | {None}
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  entries = blocks.partition.resolve_entries(blocks.transformer_rule(), pure,
                                             layer_axes=LAYER_AXES, strict=True)
  by_path = {entry[0].name: entry for entry in entries}
  _, norm_spec, norm_rule, _ = by_path["layers/attn_norm/scale"]
  for path in ("layers/attn/query_norm/scale", "layers/attn/key_norm/scale"):
    _, spec, rule, recognised = by_path[path]
    assert recognised and rule == norm_rule, (path, rule)
    # One block per layer: the whole per-layer scale, like the other norms.
    assert spec.count((2, 8)) == norm_spec.count((2, 32)) == 2


def test_model_section_overrides_and_checks():
  c = default.get_config()
  assert builders.model_config(c.model, 64) == from_preset(
      "gpt2", **{k: v for k, v in c.model.items() if k in (
          "num_layers", "num_heads", "num_kv_heads", "head_dim", "embed_dim", "mlp_dim",
          "max_seq_len", "norm_eps", "tie_embeddings", "scan_unroll")}, vocab_size=64)
  c.model.qk_norm = True
  c.model.final_logit_softcap = 30.0
  config = builders.model_config(c.model, 64)
  assert config.qk_norm and config.final_logit_softcap == 30.0 and config.norm == "layernorm"
  c.model.architecture = "bert"
  with pytest.raises(ValueError, match=r"model\.architecture \('bert'\)"):
    builders.model_config(c.model, 64)
  with pytest.raises(ConfigError, match=r"model\.architecture must be a preset"):
    config_checks.check_config(c)
  c.model.update(architecture="llama", norm="batchnorm", attn_logit_softcap=-1.0)
  with pytest.raises(ConfigError) as error:
    config_checks.check_config(c)
  assert "model.norm must be one of" in str(error.value)
  assert "model.attn_logit_softcap must be > 0" in str(error.value)
  assert "model.architecture" not in str(error.value)


def test_saved_identity_rebuilds_the_config_and_a_feature_change_is_refused():
  config = from_preset("llama", num_kv_heads=2, **TINY)
  identity = checkpointing.run_identity(config, "adamw")
  assert builders.model_config(ml_collections.ConfigDict(identity["model"]), None) == (
      dataclasses.replace(config, scan_unroll=1))
  other = checkpointing.run_identity(dataclasses.replace(config, qk_norm=True), "adamw")
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="qk_norm"):
    checkpointing.check_identity(identity, other, "/tmp/run")
  # A checkpoint from before the features named the architecture; the same model resumes.
  old = {**identity, "model": {"architecture": "llama", **{
      k: v for k, v in identity["model"].items() if k not in config.features()}}}
  checkpointing.check_identity(checkpointing.upgraded_identity(old), identity, "/tmp/run")
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="norm"):
    checkpointing.check_identity(checkpointing.upgraded_identity(
        {**old, "model": {**old["model"], "architecture": "gpt2"}}), identity, "/tmp/run")


def test_export_refuses_features_of_no_hugging_face_type(tmp_path):
  config = dataclasses.replace(TINY_PRESETS["llama"], mlp="gelu")
  params = nnx.to_pure_dict(nnx.state(create_model(config, nnx.Rngs(0)), nnx.Param))
  with pytest.raises(hf.HFCheckpointError, match="no Hugging Face model_type has the features"):
    hf.export_checkpoint(str(tmp_path / "out"), config, params)
  assert not (tmp_path / "out").exists()
  assert hf.model_type(dataclasses.replace(config, mlp="swiglu", qk_norm=True)) == "qwen3"
  with pytest.raises(hf.HFCheckpointError, match="head_dim"):
    hf.model_type(dataclasses.replace(TINY_PRESETS["gpt2"], head_dim=16))


# Comparisons with a family's name, or a read of a name-valued config field.
NAME_BRANCH = re.compile(r"""(==|!=)\s*["'](gpt2|llama|qwen3)["']"""
                         r"""|["'](gpt2|llama|qwen3)["']\s*(==|!=|in\b)"""
                         r"""|\bconfig\.architecture\b|\.architecture\s*(==|!=|in\b)"""
                         r"""|\bMODELS\[""")


def test_no_code_branches_on_an_architecture_name():
  package = pathlib.Path(__file__).resolve().parents[1] / "bigmodel_jax"
  allowed = {package / "models" / "presets.py", *(package / "hf").glob("*.py")}
  offenders = [f"{path.relative_to(package)}:{number}: {line.strip()}"
               for path in sorted(package.rglob("*.py")) if path not in allowed
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if NAME_BRANCH.search(line)]
  assert not offenders, offenders
  assert NAME_BRANCH.search('if config.architecture == "gpt2":')  # the pattern does match
