"""Tests of the KV cache and of sampling: cached logits, greedy decoding, EOS, top-k / top-p."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.models import create_model, from_preset
from bigmodel_jax.models.logit_filters import filter_logits, top_k_filter, top_p_filter
from bigmodel_jax.models.sampling import SamplingOptions, generate, generate_sampled_and_greedy
from experiments.bench_sampling import greedy_by_recompute

TINY = dict(vocab_size=64, num_layers=2, num_heads=4, head_dim=8, embed_dim=32, mlp_dim=64,
            max_seq_len=24)
CONFIGS = {
    "gpt2": from_preset("gpt2", num_kv_heads=4, tie_embeddings=True, **TINY),
    "llama": from_preset("llama", num_kv_heads=2, tie_embeddings=False, **TINY),
    # No preset: RMSNorm, GELU, learned positions, biases, QK-norm and both soft-caps.
    "mix": from_preset("llama", num_kv_heads=2, mlp="gelu", positions="learned", use_bias=True,
                       qk_norm=True, attn_logit_softcap=5.0, final_logit_softcap=10.0, **TINY),
}
ARCHS = pytest.mark.parametrize("arch", list(CONFIGS))


@functools.cache
def _model(arch):
  return create_model(CONFIGS[arch], nnx.Rngs(0))


def _split(arch):
  graphdef, params = nnx.split(_model(arch))
  return graphdef, nnx.to_pure_dict(params)


def _tokens(batch, length, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, 64, dtype=jnp.int32)


@ARCHS
def test_cached_logits_equal_full_forward(arch):
  model = _model(arch)
  tokens = _tokens(3, 12)
  full = model(tokens)
  cache = model.init_cache(3, 16)
  logits, cache = model.cached(tokens[:, :5], cache, jnp.int32(0))
  pieces = [logits]
  for i in range(5, 12):
    logits, cache = model.cached(tokens[:, i:i + 1], cache, jnp.int32(i))
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)


def test_cache_longer_than_max_seq_len_is_rejected():
  with pytest.raises(ValueError, match="max_seq_len"):
    _model("gpt2").init_cache(1, 25)


@ARCHS
def test_greedy_equals_argmax_of_full_forward(arch):
  prompts = _tokens(4, 6, seed=1)
  graphdef, params = _split(arch)
  out = generate(graphdef, params, prompts, jax.random.key(0),
                 SamplingOptions(max_new_tokens=10), greedy=True)
  reference = greedy_by_recompute(graphdef, 10)(params, prompts)
  np.testing.assert_array_equal(out.tokens, reference)
  assert bool(out.mask.all())


def test_sampled_and_greedy_in_one_call():
  graphdef, params = _split("gpt2")
  prompts = _tokens(4, 6, seed=2)
  options = SamplingOptions(max_new_tokens=8, temperature=1.0)
  sampled, greedy = jax.jit(generate_sampled_and_greedy, static_argnums=(0, 4))(
      graphdef, params, prompts, jax.random.key(3), options)
  alone = generate(graphdef, params, prompts, jax.random.key(0), options, greedy=True)
  np.testing.assert_array_equal(greedy.tokens, alone.tokens)
  assert sampled.tokens.shape == (4, 8)
  assert not np.array_equal(sampled.tokens, greedy.tokens)


def test_eos_stays_in_mask_and_is_followed_by_padding():
  graphdef, params = _split("gpt2")
  prompts = _tokens(16, 4, seed=4)
  options = SamplingOptions(max_new_tokens=12, temperature=2.0, eos_id=7, pad_id=63)
  out = generate(graphdef, params, prompts, jax.random.key(5), options)
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
  ended = 0
  for row, row_mask in zip(tokens, mask):
    hits = np.flatnonzero(row == 7)
    if hits.size:
      end = hits[0]
      ended += 1
      assert row_mask[:end + 1].all() and not row_mask[end + 1:].any()
      assert (row[end + 1:] == 63).all()
    else:
      assert row_mask.all()
  assert ended > 0  # temperature 2 on 64 tokens: some of 16 x 12 draws hit EOS
  np.testing.assert_array_equal(out.lengths, mask.sum(-1))


def test_top_k_keeps_the_k_largest():
  logits = jnp.array([[0.1, 3.0, -1.0, 2.0, 0.5]])
  kept = np.isfinite(np.asarray(top_k_filter(logits, 2)))
  np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
  np.testing.assert_array_equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_the_smallest_nucleus():
  probs = np.array([0.05, 0.5, 0.1, 0.3, 0.05])
  logits = jnp.log(jnp.asarray(probs))[None]
  # sorted 0.5, 0.3, 0.1, ...: 0.5 < 0.75 so 0.3 is needed; 0.8 >= 0.75 so 0.1 is not.
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.75)))
  np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.4)))
  np.testing.assert_array_equal(kept, [[False, True, False, False, False]])
  with pytest.raises(ValueError, match="top_p"):
    top_p_filter(logits, 0.0)


def test_sampling_frequencies_follow_filtered_distribution():
  probs = np.array([0.05, 0.5, 0.1, 0.3, 0.05])
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs)), (20000, 5))
  filtered = filter_logits(logits, top_p=0.75)
  draws = np.asarray(jax.random.categorical(jax.random.key(0), filtered))
  freq = np.bincount(draws, minlength=5) / draws.size
  np.testing.assert_allclose(freq, [0, 0.5 / 0.8, 0, 0.3 / 0.8, 0], atol=0.02)
  with pytest.raises(ValueError, match="temperature"):
    filter_logits(logits, temperature=0.0)


def test_bench_sampling_decodes_the_same_tokens():
  from experiments import bench_sampling  # pylint: disable=import-outside-toplevel
  result = bench_sampling.run(new_tokens=4, prompt_len=3, batch=2, layers=1, width=32,
                              repeats=1)
  assert result["same_greedy_tokens"]
  assert result["speedup_cached_over_recompute"] > 0
