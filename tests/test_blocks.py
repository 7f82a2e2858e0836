"""The partition engine on any JAX model: the paper's blocks for every recognised family (real
names, shapes and layouts from tests/foreign_trees.py), Adam-mini / MoFO / the Hessian blocks on
them, nnx.Optimizer, optax wrappers, and the never-silent rules (warnings, strict, errors)."""

import functools
import logging

import foreign_trees
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

from bigmodel_jax import blocks, hessian
from bigmodel_jax.models import LAYER_AXES, create_model, from_preset
from bigmodel_jax.optim import adam_mini, mofo
from bigmodel_jax.optim.weight_decay import decay_mask

CASES = {builder.__name__: builder for builder in foreign_trees.ALL_CASES}
BIASES = ("bias", "offset", "b")  # biases (norm offsets included) take no weight decay


@functools.cache
def _case(name):
  return CASES[name]()


def _rules(case):
  return blocks.transformer_rule(**case.kwargs)


def _expected(case):
  """Expected block count per leaf, in jax.tree.leaves order."""
  return [case.expected[foreign_trees.path_string(kp)].blocks
          for kp, _ in jax.tree_util.tree_flatten_with_path(case.params)[0]]


def _layers(case):
  """Number of layers held by every leaf (its layer axis's length, else 1)."""
  return [leaf.shape[leaf.layer_axis] if leaf.layer_axis is not None else 1
          for leaf in blocks.leaves(case.params, case.layer_axes)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_papers_blocks_for_every_leaf_of_every_family(name):
  case = _case(name)
  entries = blocks.resolve_entries(_rules(case), case.params, layer_axes=case.layer_axes,
                                   strict=True)
  got = [spec.count(leaf.shape) for leaf, spec, _, _ in entries]
  assert got == _expected(case), [(leaf.name, g, e) for (leaf, *_), g, e in
                                   zip(entries, got, _expected(case)) if g != e]


@pytest.mark.parametrize("name", sorted(CASES))
def test_adam_mini_state_is_about_half_of_adamw_and_updates_run(name):
  case = _case(name)
  opt = adam_mini(1e-3, partition=_rules(case), layer_axes=case.layer_axes, strict=True)
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  state = opt.init(case.params)
  adamw = nbytes(optax.adamw(1e-3).init(case.params))
  # Exact: m per element, one float32 v per block, the step count. (At these tiny widths the
  # per-token and per-element blocks weigh more than at real sizes: the ratio is checked below.)
  assert nbytes(state) == nbytes(case.params) + 4 * sum(_expected(case)) + 4
  assert nbytes(state) / adamw <= 0.5 + 2 * sum(_expected(case)) / nbytes(case.params) + 1e-3
  nu = jax.tree.leaves(state[0].nu)
  assert [x.size for x in nu] == _expected(case)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.01), case.params)
  updates, _ = jax.jit(opt.update)(grads, state, case.params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("name", sorted(CASES))
def test_mofo_moves_exactly_the_fraction_of_every_matrix(name):
  case = _case(name)
  fraction = 0.1
  opt = mofo(1e-3, fraction=fraction, layer_axes=case.layer_axes)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), case.params)
  updates, _ = jax.jit(opt.update)(grads, opt.init(case.params), case.params)
  for leaf, update in zip(blocks.leaves(case.params, case.layer_axes), jax.tree.leaves(updates)):
    moved = np.asarray(update) != 0
    if leaf.rank <= 1:
      assert moved.all(), leaf.name  # biases and norms: the dense Adam step
      continue
    axis = leaf.layer_axis
    per_layer = moved.sum(axis=leaf.per_layer_axes()) if axis is not None else moved.sum()
    size = int(np.prod(leaf.layer_shape))
    np.testing.assert_array_equal(per_layer, max(1, int(size * fraction)), err_msg=leaf.name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hessian_blocks_are_one_per_tensor_and_paper_blocks_cover_every_leaf(name):
  case = _case(name)
  per_tensor = hessian.list_blocks(case.params, layer_axes=case.layer_axes)
  counts = np.bincount([b.leaf_index for b in per_tensor], minlength=len(_layers(case)))
  np.testing.assert_array_equal(counts, _layers(case))
  paper = hessian.list_blocks(case.params, _rules(case), layer_axes=case.layer_axes, strict=True)
  counts = np.bincount([b.leaf_index for b in paper], minlength=len(_layers(case)))
  np.testing.assert_array_equal(counts, _expected(case))


@pytest.mark.parametrize("name", ["gpt2_hf_flax", "gemma3_linen", "equinox_decoder"])
def test_hessian_block_masks_tile_each_leaf_exactly_once(name):
  case = _case(name)
  cover = [np.zeros(np.shape(x), int) for x in jax.tree.leaves(case.params)]
  for block in hessian.list_blocks(case.params, _rules(case), layer_axes=case.layer_axes):
    mask = np.asarray(hessian.block_mask(block))
    assert mask.sum() == block.size, block.name
    cover[block.leaf_index] += mask.astype(int)
  assert all((c == 1).all() for c in cover)


def test_weight_decay_by_rank_whatever_the_names():
  for name in ("gemma3_linen", "equinox_decoder", "maxtext_llama2_scanned", "haiku_transformer"):
    case = _case(name)
    mask = jax.tree.leaves(decay_mask(case.params, case.layer_axes))
    for leaf, decayed in zip(blocks.leaves(case.params, case.layer_axes), mask):
      assert decayed == (leaf.rank >= 2 and leaf.path[-1] not in BIASES), (name, leaf.name)


# This project's models through nnx.Optimizer, the idiomatic NNX way.

LLAMA = from_preset("llama", vocab_size=48, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, embed_dim=32, mlp_dim=64, max_seq_len=16,
                    tie_embeddings=False)


def test_nnx_optimizer_gives_the_blocks_and_update_of_the_pure_dict_path():
  model = create_model(LLAMA, nnx.Rngs(0))
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  counts = lambda p, **kw: [s.count(np.shape(x)) for s, x in zip(
      blocks.resolve(None, p, default=blocks.transformer_rule(), **kw), jax.tree.leaves(p))]
  assert counts(nnx.state(model, nnx.Param)) == counts(pure, layer_axes=LAYER_AXES)
  assert sum(counts(pure, layer_axes=LAYER_AXES)) > 500  # head / neuron / token blocks
  opt = adam_mini(1e-2, weight_decay=0.1, strict=True)
  nnx_opt = nnx.Optimizer(model, opt, wrt=nnx.Param)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.01), nnx.state(model, nnx.Param))
  nnx_opt.update(model, grads)
  reference = adam_mini(1e-2, weight_decay=0.1, layer_axes=LAYER_AXES, strict=True)
  updates, _ = reference.update(nnx.to_pure_dict(grads), reference.init(pure), pure)
  expected = optax.apply_updates(pure, updates)
  jax.tree.map(np.testing.assert_allclose, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
               expected)


def test_wrappers_inject_hyperparams_multisteps_trainstate_and_jit_init():
  case = _case("llama_hf_flax")
  rules = _rules(case)
  injected = optax.inject_hyperparams(adam_mini)(learning_rate=1e-3, partition=rules)
  state = jax.jit(injected.init)(case.params)
  assert state.inner_state[0].nu["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"].shape \
      == (1, 4, 1)
  grads = jax.tree.map(jnp.ones_like, case.params)
  injected.update(grads, state, case.params)
  multi = optax.MultiSteps(adam_mini(1e-3, partition=rules), every_k_schedule=2)
  jax.jit(multi.update)(grads, multi.init(case.params), case.params)
  ts = train_state.TrainState.create(apply_fn=None, params=case.params,
                                     tx=mofo(1e-3, partition=rules))
  ts.apply_gradients(grads=grads)
  plain = optax.inject_hyperparams(mofo)(learning_rate=1e-3, fraction=0.2)
  plain.update(grads, plain.init(case.params), case.params)


# Never silent.

def _cnn():
  return {"conv": {"kernel": jnp.ones((3, 3, 2, 8)), "bias": jnp.ones(8)},
          "head": {"kernel": jnp.ones((8, 10))}, "temperature": jnp.ones(())}


def test_unrecognised_leaves_warn_once_at_init_or_raise_when_strict(caplog):
  with caplog.at_level(logging.WARNING, logger="bigmodel_jax.blocks"):
    opt = adam_mini(1e-3)
    state = opt.init(_cnn())
    opt.update(_cnn(), state, _cnn())
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1
  assert "conv/kernel (3, 3, 2, 8): default: per output neuron" in warnings[0]
  assert "temperature" in warnings[0] and "head/kernel" not in warnings[0]
  assert state[0].nu["conv"]["kernel"].shape == (1, 1, 1, 8)
  with pytest.raises(blocks.UnrecognisedLeavesError, match="conv/kernel"):
    mofo(1e-3, partition=blocks.transformer_rule(), strict=True).init(_cnn())
  with pytest.raises(blocks.UnrecognisedLeavesError, match="conv/kernel"):
    hessian.list_blocks(_cnn(), blocks.transformer_rule(), strict=True)


def test_stacked_layers_are_declared_or_recorded_never_guessed():
  case = _case("maxtext_llama2_scanned")
  undeclared = blocks.resolve_entries(None, case.params, default=blocks.transformer_rule())
  assert not all(ok for *_, ok in undeclared)  # rank-4 (D, L, H, Dh) kernels: flagged
  hf = _case("llama_hf_flax")  # `layers/0/...`: a list index is one layer
  assert all(leaf.layer_axis is None for leaf in blocks.leaves(hf.params))
  with pytest.raises(ValueError, match="layers are a list"):
    blocks.leaves(hf.params, {"model/layers": 0})
  with pytest.raises(ValueError, match="different numbers of layers"):
    blocks.leaves(case.params, {"params/decoder/layers": 0})
  model = create_model(LLAMA, nnx.Rngs(0))
  recorded = blocks.recorded_layer_axes(nnx.state(model, nnx.Param))
  assert recorded["layers/attn/query/kernel"] == 0 and "embed/embedding" not in recorded


def test_every_partition_form_is_accepted_everywhere():
  case = _case("llama_hf_flax")
  rule_list = blocks.transformer_rules()
  heads = blocks.Heads(head_dim=6)
  forms = [blocks.RuleSet(rule_list, heads), blocks.transformer_rule(head_dim=6)]
  expected = _expected(case)
  for form in forms:
    assert [s.count(np.shape(x)) for s, x in zip(blocks.resolve(form, case.params),
                                                 jax.tree.leaves(case.params))] == expected
    adam_mini(1e-3, partition=form).init(case.params)
    mofo(1e-3, partition=form).init(case.params)
    assert len(hessian.list_blocks(case.params, form)) == sum(expected)
    assert "0 unrecognised leaves" in blocks.describe(case.params, form)
  tree = blocks.resolve_tree(forms[0], case.params)
  assert [s.count(np.shape(x)) for s, x in zip(blocks.resolve(tree, case.params),
                                               jax.tree.leaves(case.params))] == expected
  with pytest.raises(ValueError, match="head_dim"):  # fused q/k kernels need the head size
    blocks.resolve(rule_list, case.params)
  with pytest.raises(ValueError, match="partition pytree has 3 leaves"):
    blocks.resolve([(0,), (1,), ()], case.params)
  renamed = {"x" + k: v for k, v in tree.items()}  # right leaf count, wrong structure
  with pytest.raises(ValueError, match="partition pytree has xlm_head/kernel where"):
    blocks.resolve(renamed, case.params)


def test_user_rules_first_match_wins_and_required_rules_must_match():
  params = {"dense": {"kernel": jnp.ones((4, 6))}, "other": {"w": jnp.ones((2, 3))}}
  rules = [blocks.BlockRule("dense rows", ("dense", "kernel"), (-1,), ndim=2)]
  axes = [s.axes for s in blocks.resolve(rules, params)]
  assert axes == [(1,), (0,)]  # `other/w`: the (in, out) default, per output neuron
  with pytest.raises(ValueError, match=r"\['missing'\] match no"):
    blocks.resolve([blocks.BlockRule("missing", ("nope", "kernel"), (-1,))], params)
  with pytest.raises(ValueError, match=r"dense/kernel \(4, 6\).*rank 2"):
    blocks.resolve([blocks.BlockRule("3d", ("dense", "kernel"), (-1,), ndim=3)], params)
  rule = blocks.BlockRule("wo", ("wo", "kernel"), (-2,), ndim=2)
  assert rule.path_matches(("mlp", "wo", "kernel"))
  assert not rule.path_matches(("word_embeddings", "kernel"))


def test_spec_reduce_expand_and_layer_axis_insertion():
  x = jnp.arange(2 * 12 * 5, dtype=jnp.float32).reshape(2, 12, 5)
  parts = blocks.Parts(1, (4, 4, 4), (blocks.Blocks((1, 2), (2, 2, 2, 5)),
                                      blocks.Blocks((1, 2), (2, 2, 2, 5)), blocks.Blocks((2,))))
  stat = blocks.reduce_blocks(x, parts)
  assert stat.shape == (2 * 5 + 2 * 5 + 2 * 4,)  # q, k per (batch, column); v per (batch, row)
  back = blocks.expand_blocks(stat, parts, x.shape)
  np.testing.assert_allclose(back[0, 0], np.asarray(x)[0, :4].mean(0))
  np.testing.assert_allclose(back[1, 9], np.full(5, np.asarray(x)[1, 9].mean()))
  one_layer = blocks.Blocks((0, 2), (16, 4, 6))  # (D, H*Dh) viewed (D, H, Dh), per head
  stacked = one_layer.with_layer_axis((16, 24), 1, 3)  # MaxText: layers on axis 1
  assert stacked == blocks.Blocks((0, 3), (16, 3, 4, 6))
  assert stacked.count((16, 3, 24)) == 12


# Real sizes, abstract shapes only: the state is about half of AdamW's on foreign models too.

def _abstract(shapes):
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _hf_llama_7b():
  d, h, dh, f, v = 4096, 32, 128, 11008, 32000
  layer = {"self_attn": {n: {"kernel": (d, h * dh)} for n in ("q_proj", "k_proj", "v_proj")}
           | {"o_proj": {"kernel": (h * dh, d)}},
           "mlp": {"gate_proj": {"kernel": (d, f)}, "up_proj": {"kernel": (d, f)},
                   "down_proj": {"kernel": (f, d)}},
           "input_layernorm": {"weight": (d,)}, "post_attention_layernorm": {"weight": (d,)}}
  return _abstract({"model": {"embed_tokens": {"embedding": (v, d)},
                              "layers": {str(i): layer for i in range(32)},
                              "norm": {"weight": (d,)}},
                    "lm_head": {"kernel": (d, v)}}), {"head_dim": dh}, None


def _gemma_2b_linen():
  d, h, k, dh, f, v = 2048, 8, 1, 256, 16384, 256128
  layer = {"attn": {"q_einsum": {"w": (h, d, dh)}, "kv_einsum": {"w": (2, k, d, dh)},
                    "attn_vec_einsum": {"w": (h, dh, d)}},
           "mlp": {"gating_einsum": (2, f, d), "linear": (f, d)},
           "pre_attention_norm": {"scale": (d,)}, "pre_ffw_norm": {"scale": (d,)}}
  return _abstract({"embedder": {"input_embedding": (v, d)},
                    **{f"layer_{i}": layer for i in range(18)},
                    "final_norm": {"scale": (d,)}}), {}, None


def _maxtext_llama2_7b():
  d, h, dh, f, v, n = 4096, 32, 128, 11008, 32000, 32
  layers = {"self_attention": {q: {"kernel": (d, n, h, dh)} for q in ("query", "key", "value")}
            | {"out": {"kernel": (h, n, dh, d)}},
            "mlp": {"wi_0": {"kernel": (d, n, f)}, "wi_1": {"kernel": (d, n, f)},
                    "wo": {"kernel": (f, n, d)}},
            "pre_self_attention_layer_norm": {"scale": (d, n)},
            "post_self_attention_layer_norm": {"scale": (d, n)}}
  return _abstract({"params": {"token_embedder": {"embedding": (v, d)},
                               "decoder": {"layers": layers, "decoder_norm": {"scale": (d,)},
                                           "logits_dense": {"kernel": (d, v)}}}}), {}, {
                                               "params/decoder/layers": 1}


@pytest.mark.parametrize("build", [_hf_llama_7b, _gemma_2b_linen, _maxtext_llama2_7b])
def test_state_is_about_half_of_adamw_at_real_sizes(build):
  params, kwargs, layer_axes = build()
  opt = adam_mini(1e-3, partition=blocks.transformer_rule(**kwargs), layer_axes=layer_axes,
                  strict=True)
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  ratio = nbytes(jax.eval_shape(opt.init, params)) / nbytes(
      jax.eval_shape(optax.adamw(1e-3).init, params))
  assert ratio <= 0.52, ratio
