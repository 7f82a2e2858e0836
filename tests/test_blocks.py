"""The block partition core: rules, pytrees of axes, reduced shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax import blocks

PARAMS = {
    "embed": {"embedding": jnp.ones((10, 4))},
    "layers": {"attn": {"query": {"kernel": jnp.ones((3, 4, 2, 2))}},
               "attn_norm": {"scale": jnp.ones((3, 4))}},
    "final_norm": {"bias": jnp.ones((4,))},
}


def test_per_tensor_keeps_the_stacked_layer_axis():
  axes = blocks.resolve(None, PARAMS)
  assert axes["embed"]["embedding"] == (0, 1)
  assert axes["layers"]["attn"]["query"]["kernel"] == (1, 2, 3)
  assert axes["layers"]["attn_norm"]["scale"] == (1,)
  assert blocks.num_blocks((3, 4, 2, 2), (1, 2, 3)) == 3


def test_callable_rule_gets_string_paths_and_negative_axes_are_normalised():
  seen = []

  def rule(path, leaf):
    seen.append(path)
    return (-1,) if leaf.ndim > 1 else ()

  axes = blocks.resolve(rule, PARAMS)
  assert ("layers", "attn", "query", "kernel") in seen
  assert axes["layers"]["attn"]["query"]["kernel"] == (3,)
  assert axes["final_norm"]["bias"] == ()


def test_pytree_partition_and_errors():
  tree = {"embed": {"embedding": (1,)},
          "layers": {"attn": {"query": {"kernel": (1, 3)}}, "attn_norm": {"scale": ()}},
          "final_norm": {"bias": ()}}
  axes = blocks.resolve(tree, PARAMS)
  assert axes["layers"]["attn"]["query"]["kernel"] == (1, 3)
  with pytest.raises(ValueError, match="final_norm/bias"):
    blocks.resolve(lambda path, leaf: (1,), PARAMS)


def test_block_mean_is_stored_at_the_reduced_shape():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  mean = blocks.block_mean(x, (1,))
  assert mean.shape == blocks.block_shape(x.shape, (1,)) == (2, 1, 4)
  np.testing.assert_allclose(mean, np.mean(np.asarray(x), axis=1, keepdims=True))
  assert blocks.block_mean(x.astype(jnp.bfloat16), (0, 1, 2)).dtype == jnp.float32
  assert jax.tree.leaves(blocks.resolve(None, PARAMS), is_leaf=blocks.is_axes)


# Rules as data: the built-in Transformer rules, rule sets, describe().

HF_LLAMA = {  # HF-Flax naming: one module per layer, fused (D, H*Dh) kernels, flax (in, out)
    "model": {
        "embed_tokens": {"embedding": jnp.ones((50, 16))},
        "layers": {"0": {
            "self_attn": {"q_proj": {"kernel": jnp.ones((16, 24))},  # H=4 heads of Dh=6
                          "k_proj": {"kernel": jnp.ones((16, 12))},  # K=2 kv heads
                          "v_proj": {"kernel": jnp.ones((16, 12))},
                          "o_proj": {"kernel": jnp.ones((24, 16))}},
            "mlp": {"gate_proj": {"kernel": jnp.ones((16, 40))},
                    "down_proj": {"kernel": jnp.ones((40, 16))}},
            "input_layernorm": {"weight": jnp.ones((16,))}}},
        "norm": {"weight": jnp.ones((16,))},
    },
    "lm_head": {"kernel": jnp.ones((16, 50))},
}


def _stat_shapes(partition, params):
  resolved = blocks.resolve_blocks(partition, params)
  return jax.tree.map(lambda x, spec: spec.stat_shape(x.shape), params, resolved)


def test_hf_flax_names_with_explicit_head_dim():
  shapes = _stat_shapes(blocks.transformer_rule(head_dim=6), HF_LLAMA)
  layer = shapes["model"]["layers"]["0"]
  assert shapes["model"]["embed_tokens"]["embedding"] == (50, 1)  # per token
  assert shapes["lm_head"]["kernel"] == (1, 50)  # per output token
  assert layer["self_attn"]["q_proj"]["kernel"] == (1, 4, 1)  # per head, not width / heads
  assert layer["self_attn"]["k_proj"]["kernel"] == (1, 2, 1)  # GQA: per kv head
  assert layer["self_attn"]["v_proj"]["kernel"] == (1, 12)  # per output neuron
  assert layer["self_attn"]["o_proj"]["kernel"] == (1, 16)
  assert layer["mlp"]["down_proj"]["kernel"] == (1, 16)
  assert layer["input_layernorm"]["weight"] == (1,)
  whole = _stat_shapes(blocks.transformer_rule(head_dim=6, whole_value=True), HF_LLAMA)
  assert whole["model"]["layers"]["0"]["self_attn"]["v_proj"]["kernel"] == (1, 1)
  with pytest.raises(ValueError, match=r"self_attn/k_proj/kernel.*head_dim"):
    blocks.resolve_blocks(blocks.transformer_rule(), HF_LLAMA)
  with pytest.raises(ValueError, match="multiple of head_dim=5"):
    blocks.resolve_blocks(blocks.transformer_rule(head_dim=5), HF_LLAMA)
  with pytest.raises(ValueError, match="resolve_blocks"):
    blocks.resolve(blocks.transformer_rule(head_dim=6), HF_LLAMA)


def test_stacked_project_leaves_use_negative_axes():
  params = {"layers": {"attn": {"query": {"kernel": jnp.ones((3, 8, 4, 2))},
                                "out": {"kernel": jnp.ones((3, 4, 2, 8))}},
                       "mlp": {"up": {"kernel": jnp.ones((3, 8, 16))}},
                       "attn_norm": {"scale": jnp.ones((3, 8))}},
            "wpe": {"embedding": jnp.ones((5, 8))},
            "wte": {"embedding": jnp.ones((7, 8))}}
  axes = blocks.resolve(blocks.transformer_rule(), params)  # no reshape: plain axes work too
  assert axes["layers"]["attn"]["query"]["kernel"] == (1, 3)
  assert axes["layers"]["attn"]["out"]["kernel"] == (1, 2)
  assert axes["layers"]["mlp"]["up"]["kernel"] == (1,)
  assert axes["layers"]["attn_norm"]["scale"] == (1,)
  assert axes["wpe"]["embedding"] == (0, 1)
  assert axes["wte"]["embedding"] == (1,)


def test_patterns_match_whole_components_never_substrings():
  rule = blocks.BlockRule("wo", ("wo", "kernel"), (-2,), ndim=2)
  assert rule.path_matches(("mlp", "wo", "kernel"))
  assert not rule.path_matches(("word_embeddings", "kernel"))
  assert not rule.path_matches(("mlp", "wo_x", "kernel"))
  alt = blocks.BlockRule("any", (("a", "b"), "*", "kernel"), (-1,))
  assert alt.path_matches(("x", "b", "anything", "kernel"))
  assert not alt.path_matches(("b", "kernel"))
  with pytest.raises(ValueError, match="negative"):
    blocks.BlockRule("bad", ("kernel",), (0,))


def test_user_rules_first_match_wins_fallback_and_errors():
  params = {"dense": {"kernel": jnp.ones((4, 6))}, "other": {"w": jnp.ones((2, 3))}}
  rules = blocks.RuleSet([blocks.BlockRule("dense rows", ("dense", "kernel"), (-1,), ndim=2),
                          blocks.BlockRule("any kernel", ("kernel",), ())])
  with pytest.raises(ValueError, match=r"\['any kernel'\] match no parameter leaf"):
    blocks.resolve(rules, params)
  rules = blocks.RuleSet(rules.rules[:1])
  axes = blocks.resolve(rules, params)
  assert axes["dense"]["kernel"] == (1,) and axes["other"]["w"] == (0, 1)  # fallback
  assert rules.fallback_leaves(params) == ["other/w"]
  wrong_rank = blocks.RuleSet([blocks.BlockRule("3d", ("dense", "kernel"), (-1,), ndim=3)])
  with pytest.raises(ValueError, match=r"dense/kernel \(4, 6\).*rank 2"):
    blocks.resolve(wrong_rank, params)
  with pytest.raises(ValueError, match=r"\['missing'\] match no"):
    blocks.describe(params, [blocks.BlockRule("missing", ("nope", "kernel"), (-1,))])


def test_describe_prints_the_table_and_flags_fallbacks(capsys):
  params = {"embed": {"embedding": jnp.ones((10, 4))},
            "layers": {"mlp": {"up": {"kernel": jnp.ones((2, 4, 6))}}},
            "head": {"w": jnp.ones((4, 3))}}
  table = blocks.describe(params)
  assert capsys.readouterr().out.strip() == table
  lines = table.splitlines()
  assert lines[0].split() == ["leaf", "shape", "blocks", "block", "stat", "shape", "rule"]
  row = next(line for line in lines if line.startswith("layers/mlp/up/kernel"))
  assert "(2, 4, 6)" in row and " 12 " in row and "mlp: per output neuron" in row
  assert "FALLBACK" in next(line for line in lines if line.startswith("head/w"))
  assert "FALLBACK" not in row
  assert lines[-1] == "3 leaves, 23 blocks, 1 fallback leaves"
