"""Adam-mini: against an independent NumPy implementation, against AdamW, inside optax wrappers,
under jit, in bf16, sharded, and its state memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import blocks
from bigmodel_jax.models import LAYER_AXES, create_model, from_preset
from bigmodel_jax.optim import AdamMiniState, scale_by_adam_mini
from bigmodel_jax.optim import adam_mini as adam_mini_any_tree
from bigmodel_jax.train.optimizers import decay_mask


def adam_mini(*args, **kwargs):
  """Adam-mini on this project's models held as pure dicts: their stacked layers declared."""
  return adam_mini_any_tree(*args, layer_axes=LAYER_AXES, **kwargs)

GPT2 = from_preset("gpt2", vocab_size=48, num_layers=2, num_heads=4,
                   num_kv_heads=4, head_dim=8, embed_dim=32, mlp_dim=64, max_seq_len=16,
                   tie_embeddings=True)
LLAMA = from_preset("llama", vocab_size=48, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, embed_dim=32, mlp_dim=64, max_seq_len=16,
                    tie_embeddings=False)
MODELS = {"gpt2": GPT2, "llama_gqa": LLAMA}
HYPER = dict(b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)


def _params(config, dtype=jnp.float32):
  model = create_model(config, nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def _grads(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


# Written out by hand from ALGORITHMS.md section 1 (not from blocks.transformer_rules): the axes of
# the full stacked leaf that one block spans.
REFERENCE_AXES = {
    "embed/embedding": (1,),  # per token
    "pos_embed/embedding": (0, 1),  # whole tensor
    "lm_head/kernel": (0,),  # (D, V): per output token
    "final_norm/scale": (0,),
    "layers/attn/query/kernel": (1, 3),  # (L, D, H, Dh): per head
    "layers/attn/key/kernel": (1, 3),  # (L, D, K, Dh): per kv head
    "layers/attn/value/kernel": (1,),  # per output neuron
    "layers/attn/out/kernel": (1, 2),  # (L, H, Dh, D): per output neuron
    "layers/mlp/up/kernel": (1,),
    "layers/mlp/gate/kernel": (1,),
    "layers/mlp/down/kernel": (1,),
    "layers/attn_norm/scale": (1,),
    "layers/mlp_norm/scale": (1,),
}


def _reference_axes(name):
  return () if name.endswith("/bias") else REFERENCE_AXES[name]


def _numpy_adam_mini(params, grads_per_step, lr, b1, b2, eps, weight_decay):
  """Independent float64 NumPy implementation (torch AdamW conventions)."""
  flat = {"/".join(blocks.path_names(kp)): np.asarray(p, np.float64)
          for kp, p in jax.tree_util.tree_leaves_with_path(params)}
  m = {k: np.zeros_like(p) for k, p in flat.items()}
  v = {k: np.zeros(blocks.block_shape(p.shape, _reference_axes(k))) for k, p in flat.items()}
  for t, grads in enumerate(grads_per_step, start=1):
    g_flat = {"/".join(blocks.path_names(kp)): np.asarray(g, np.float64)
              for kp, g in jax.tree_util.tree_leaves_with_path(grads)}
    for k, p in flat.items():
      g, axes = g_flat[k], _reference_axes(k)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * (np.mean(g * g, axis=axes, keepdims=True) if axes else g * g)
      decayed = k.endswith(("/kernel", "/embedding"))
      p = p * (1 - lr * weight_decay) if decayed else p
      flat[k] = p - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k]) / np.sqrt(1 - b2**t) + eps)
  return flat, v


@pytest.mark.parametrize("model", sorted(MODELS))
def test_matches_numpy_reference_over_20_steps(model):
  params = _params(MODELS[model])
  grads = [_grads(params, seed) for seed in range(20)]
  lr = 1e-2
  opt = adam_mini(lr, **HYPER)
  state = opt.init(params)
  update = jax.jit(opt.update)
  p = params
  for g in grads:
    updates, state = update(g, state, p)
    p = optax.apply_updates(p, updates)
  expected, expected_v = _numpy_adam_mini(params, grads, lr, **HYPER)
  for kp, leaf in jax.tree_util.tree_leaves_with_path(p):
    name = "/".join(blocks.path_names(kp))
    np.testing.assert_allclose(leaf, expected[name], rtol=1e-6, atol=1e-6, err_msg=name)
  for kp, nu in jax.tree_util.tree_leaves_with_path(state[0].nu):
    name = "/".join(blocks.path_names(kp))
    assert nu.shape == expected_v[name].shape, name  # stored at the reduced block shape
    np.testing.assert_allclose(nu, expected_v[name], rtol=1e-5, err_msg=name)


def test_single_element_blocks_equal_adamw():
  params = _params(GPT2)
  mini = adam_mini(1e-2, partition=blocks.per_element, **HYPER)
  adamw = optax.adamw(1e-2, mask=decay_mask, **HYPER)
  p_mini = p_adamw = params
  s_mini, s_adamw = mini.init(params), adamw.init(params)
  for seed in range(20):
    g = _grads(params, seed)
    u, s_mini = jax.jit(mini.update)(g, s_mini, p_mini)
    p_mini = optax.apply_updates(p_mini, u)
    u, s_adamw = jax.jit(adamw.update)(g, s_adamw, p_adamw)
    p_adamw = optax.apply_updates(p_adamw, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               p_mini, p_adamw)


def _inject(factory, lr):
  if factory is adam_mini:
    return optax.inject_hyperparams(adam_mini_any_tree, static_args=("weight_decay_mask",))(
        learning_rate=lr, partition=blocks.per_element, weight_decay_mask=decay_mask, **HYPER)
  return optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=lr, mask=decay_mask, **HYPER)


# name -> wraps a transformation factory (lr -> transformation).
WRAPPERS = {
    "chain_clip": lambda make: optax.chain(optax.clip_by_global_norm(1.0), make(1e-2)),
    "multi_steps": lambda make: optax.MultiSteps(make(1e-2), every_k_schedule=2),
    "apply_if_finite": lambda make: optax.apply_if_finite(make(1e-2), max_consecutive_errors=3),
    "schedule": lambda make: make(optax.linear_schedule(1e-2, 1e-3, 10)),
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_inside_optax_wrappers_equals_adamw_with_single_element_blocks(wrapper):
  params = _params(GPT2)
  mini = WRAPPERS[wrapper](lambda lr: adam_mini(lr, partition=blocks.per_element, **HYPER))
  adamw = WRAPPERS[wrapper](lambda lr: optax.adamw(lr, mask=decay_mask, **HYPER))
  default = WRAPPERS[wrapper](lambda lr: adam_mini(lr, **HYPER))  # the Transformer rules
  results = []
  for opt in (mini, adamw, default):
    p, s = params, opt.init(params)
    step = jax.jit(opt.update)
    for seed in range(4):
      u, s = step(_grads(params, seed), s, p)
      p = optax.apply_updates(p, u)
    results.append(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               results[0], results[1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(results[2]))


def test_inject_hyperparams_changes_lr_at_run_time_without_retracing():
  params = _params(GPT2)
  traces = []
  mini, adamw = _inject(adam_mini, 1e-2), _inject(optax.adamw, 1e-2)

  def make_step(opt):
    def step(g, s, p):
      traces.append(opt)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s
    return jax.jit(step)

  out = []
  for opt in (mini, adamw):
    step, p, s = make_step(opt), params, opt.init(params)
    for seed in range(4):
      if seed == 2:
        s.hyperparams["learning_rate"] = jnp.asarray(3e-3, jnp.float32)
      p, s = step(_grads(params, seed), s, p)
    out.append(p)
  assert len(traces) == 2  # one trace per optimizer, none for the new learning rate
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *out)


def test_bf16_params_keep_their_dtype():
  params = _params(LLAMA, jnp.bfloat16)
  opt = adam_mini(1e-2, **HYPER)
  state = opt.init(params)
  updates, state = jax.jit(opt.update)(_grads(params, 0), state, params)
  new = optax.apply_updates(params, updates)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state[0].mu))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0].nu))
  state32 = scale_by_adam_mini(mu_dtype=jnp.float32).init(params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state32.mu))


def _reduced_axis_spec(spec, leaf, size):
  """Shards the first reduced axis that `size` divides (the hard case for a block mean)."""
  for axis in spec.axes if spec.view is None else ():
    if leaf.shape[axis] % size == 0:
      return PartitionSpec(*[("x" if a == axis else None) for a in range(leaf.ndim)])
  return PartitionSpec()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_sharded_over_reduced_axes_equals_unsharded(model):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
  params = _params(MODELS[model])
  cuts = blocks.resolve(None, params, default=blocks.transformer_rule(), layer_axes=LAYER_AXES)
  specs = jax.tree.unflatten(jax.tree.structure(params), [
      _reduced_axis_spec(c, x, 8) for c, x in zip(cuts, jax.tree.leaves(params))])
  assert sum(spec != PartitionSpec() for spec in jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, PartitionSpec))) >= 6
  put = lambda tree: jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
                                  tree, specs)
  opt = adam_mini(1e-2, **HYPER)
  step = jax.jit(opt.update)
  results = []
  for shard in (False, True):
    p = put(params) if shard else params
    s = opt.init(p)
    shardings = [jax.tree.map(lambda x: x.sharding, s)]
    for seed in range(3):
      g = _grads(params, seed)
      u, s = step(put(g) if shard else g, s, p)
      p = optax.apply_updates(p, u)
      shardings.append(jax.tree.map(lambda x: x.sharding, s))
    results.append(p)
    if shard:
      for later in shardings[1:]:
        jax.tree.map(lambda a, b, x: _assert_equivalent(a, b, x.ndim), shardings[0], later, s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *results)


def _assert_equivalent(a, b, ndim):
  assert a.is_equivalent_to(b, ndim), (a, b)


@pytest.mark.parametrize("size,config", [
    ("gpt2_124m", from_preset("gpt2", vocab_size=50257, num_layers=12,
                              num_heads=12, num_kv_heads=12, head_dim=64, embed_dim=768,
                              mlp_dim=3072, max_seq_len=1024, tie_embeddings=True)),
    ("llama2_7b", from_preset("llama", vocab_size=32000, num_layers=32,
                              num_heads=32, num_kv_heads=32, head_dim=128, embed_dim=4096,
                              mlp_dim=11008, max_seq_len=4096, tie_embeddings=False)),
])
def test_state_is_about_half_of_adamw(size, config):
  model = nnx.eval_shape(lambda: create_model(config, nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  mini = nbytes(jax.eval_shape(adam_mini(1e-3).init, params))
  adamw = nbytes(jax.eval_shape(optax.adamw(1e-3).init, params))
  assert mini / adamw <= 0.501, (size, mini / adamw)
  assert isinstance(jax.eval_shape(scale_by_adam_mini().init, params), AdamMiniState)


def test_head_wise_blocks_of_fused_kernels_need_head_dim():
  params = {"self_attn": {"q_proj": {"kernel": jnp.ones((16, 32))},
                          "k_proj": {"kernel": jnp.ones((16, 16))}}}
  with pytest.raises(ValueError, match=r"self_attn/k_proj/kernel.*head_dim"):
    adam_mini_any_tree(1e-3).init(params)
  opt = adam_mini_any_tree(1e-3, partition=blocks.transformer_rule(head_dim=8))
  state = opt.init(params)
  assert state[0].nu["self_attn"]["q_proj"]["kernel"].shape == (1, 4, 1)
  assert state[0].nu["self_attn"]["k_proj"]["kernel"].shape == (1, 2, 1)
  updates, _ = jax.jit(opt.update)(_grads(params, 0), state, params)
  assert updates["self_attn"]["q_proj"]["kernel"].shape == (16, 32)
