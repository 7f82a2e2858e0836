"""Correctness of bigmodel_jax.hessian against exact Hessians (float64, tiny models)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import blocks, hessian, sharding
from bigmodel_jax.models import create_model, from_preset

LAYERS = {"layers": 0}  # the test trees stack their layers on axis 0 under "layers"


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


@functools.cache
def _mlp_problem():
  """A tiny MLP with a stacked `layers` leaf (per-layer blocks) and its mean loss over 2 batches."""
  keys = jax.random.split(jax.random.key(0), 6)
  params = {"in": {"kernel": 0.5 * jax.random.normal(keys[0], (4, 6), jnp.float64),
                   "bias": 0.1 * jax.random.normal(keys[1], (6,), jnp.float64)},
            "layers": {"kernel": 0.4 * jax.random.normal(keys[2], (2, 6, 6), jnp.float64)},
            "out": {"kernel": 0.5 * jax.random.normal(keys[3], (6, 3), jnp.float64)}}
  batches = [{"x": jax.random.normal(k, (8, 4), jnp.float64),
              "y": jax.random.randint(k, (8,), 0, 3)} for k in keys[4:]]

  def loss(p, batch):
    h = jnp.tanh(batch["x"] @ p["in"]["kernel"] + p["in"]["bias"])
    for layer in range(2):
      h = jnp.tanh(h @ p["layers"]["kernel"][layer])
    logits = h @ p["out"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  return params, hessian.mean_loss(loss, batches), loss, batches


@functools.cache
def _transformer_problem():
  """A one-layer pre-norm Transformer in pure float64 jnp (Q, K, V, O separate, stacked axis)."""
  d, heads, vocab, length = 8, 2, 11, 6
  shapes = {"embed": {"embedding": (vocab, d)}, "pos_embed": {"embedding": (length, d)},
            "layers": {"attn": {n: {"kernel": (1, d, d)} for n in ("query", "key", "value", "out")},
                       "mlp": {"up": {"kernel": (1, d, 2 * d)}, "down": {"kernel": (1, 2 * d, d)}},
                       "norm": {"scale": (1, d)}}}
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(0), len(leaves))
  params = jax.tree.unflatten(treedef, [0.3 * jax.random.normal(k, s, jnp.float64)
                                        for k, s in zip(keys, leaves)])
  params["layers"]["norm"]["scale"] = 1.0 + params["layers"]["norm"]["scale"]
  tokens = jax.random.randint(jax.random.key(1), (2, length + 1), 0, vocab)

  def norm(x, scale):
    return scale * (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)

  def loss_fn(p):
    x = p["embed"]["embedding"][tokens[:, :-1]] + p["pos_embed"]["embedding"]
    a, m = p["layers"]["attn"], p["layers"]["mlp"]
    h = norm(x, p["layers"]["norm"]["scale"][0])
    split = lambda y: y.reshape(*y.shape[:2], heads, d // heads)
    q, k, v = (split(h @ a[n]["kernel"][0]) for n in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
    logits = jnp.where(jnp.tril(jnp.ones((length, length), bool)), logits, -1e30)
    att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits), v).reshape(x.shape)
    x = x + att @ a["out"]["kernel"][0]
    x = x + jax.nn.gelu(x @ m["up"]["kernel"][0]) @ m["down"]["kernel"][0]
    out = x @ p["embed"]["embedding"].T
    return optax.softmax_cross_entropy_with_integer_labels(out, tokens[:, 1:]).mean()

  return params, loss_fn


@functools.cache
def _project_gpt2_problem():
  """This project's GPT-2 (one layer); its attention and logits run in float32 by design."""
  config = from_preset("gpt2", vocab_size=11, num_layers=1, num_heads=2,
                       num_kv_heads=2, head_dim=4, embed_dim=8, mlp_dim=16, max_seq_len=6,
                       tie_embeddings=True, dtype="float64", param_dtype="float64")
  graphdef, state = nnx.split(create_model(config, nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(state)
  tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 11)

  def loss_fn(p):
    logits = nnx.merge(graphdef, p)(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  return params, loss_fn


@functools.cache
def _hessian(problem):
  """The exact Hessian of a cached problem (computed once per test session)."""
  params, loss_fn = {"mlp": lambda: _mlp_problem()[:2], "transformer": _transformer_problem,
                     "gpt2": _project_gpt2_problem}[problem]()
  return np.asarray(hessian.hessian_matrix(loss_fn, params))


def _block_hvp_fn(loss_fn, params, block):
  """A jitted v -> H_bb v for `block` (the block index is traced: one compile per leaf)."""
  fn = jax.jit(lambda v, i: hessian.block_hvp(loss_fn, params, block, v, i))
  return lambda v: fn(v, jnp.asarray(block.index, jnp.int32))


def _random_like(params, seed=3):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("mode", ["forward_over_reverse", "reverse_over_reverse", "auto"])
def test_hvp_matches_exact_hessian(mode):
  params, loss_fn, _, _ = _mlp_problem()
  v = _random_like(params)
  flat_v, _ = jax.flatten_util.ravel_pytree(v)
  expected = _hessian("mlp") @ flat_v
  got = jax.jit(lambda p, u: jax.flatten_util.ravel_pytree(hessian.hvp(loss_fn, p, u, mode))[0])(
      params, v)
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_mean_loss_is_a_mean():
  params, loss_fn, loss, batches = _mlp_problem()
  expected = np.mean([loss(params, b) for b in batches])
  np.testing.assert_allclose(loss_fn(params), expected, rtol=1e-12)


def test_auto_falls_back_when_forward_mode_is_blocked():
  @jax.custom_vjp
  def square(x):
    return x ** 2

  square.defvjp(lambda x: (x ** 2, x), lambda x, g: (2 * x * g,))
  loss_fn = lambda p: jnp.sum(square(p["w"]) ** 2)
  params = {"w": jnp.arange(1.0, 4.0)}
  v = {"w": jnp.ones(3)}
  out = hessian.hvp(loss_fn, params, v, "auto")
  np.testing.assert_allclose(out["w"], 12 * params["w"] ** 2)


@pytest.mark.parametrize("problem", ["mlp", "transformer"])
def test_block_hvp_is_the_sliced_block(problem):
  params, loss_fn = (_mlp_problem()[:2] if problem == "mlp" else _transformer_problem())
  h = _hessian(problem)
  blocks = hessian.list_blocks(params, layer_axes=LAYERS)
  if problem == "mlp":
    assert [b.name for b in blocks if b.path[0] == "layers"] == ["layers/kernel[0]",
                                                                  "layers/kernel[1]"]
  else:  # one compile per leaf: the leaves of the paper's figures
    blocks = hessian.select_blocks(blocks, ["attn/query/kernel", "attn/out/kernel",
                                            "mlp/up/kernel", "embed/embedding"])
  v = _random_like(params)
  for block in blocks:
    leaf_v = jax.tree.leaves(v)[block.leaf_index]
    idx = hessian.block_indices(params, block)
    mask = np.asarray(hessian.block_mask(block)).ravel().astype(bool)
    expected = np.asarray(h)[np.ix_(idx, idx)] @ np.asarray(leaf_v).ravel()[mask]
    got = np.asarray(_block_hvp_fn(loss_fn, params, block)(leaf_v)).ravel()
    np.testing.assert_allclose(got[mask], expected, rtol=1e-8, atol=1e-12, err_msg=block.name)
    np.testing.assert_array_equal(got[~mask], 0.0)


def test_head_wise_blocks_of_fused_kernels_are_the_sliced_blocks():
  # The Adam-mini blocks (query/key per head of a fused (D, H*Dh) kernel, value per output neuron)
  # as Hessian blocks: H_bb v_b equals the rows and columns of the exact Hessian.
  params, loss_fn = _transformer_problem()
  h = _hessian("transformer")
  paper = blocks.transformer_rule(head_dim=4)
  all_blocks = hessian.list_blocks(params, paper, layer_axes=LAYERS)
  query = hessian.select_blocks(all_blocks, ["attn/query/kernel"])
  assert [b.name for b in query] == ["layers/attn/query/kernel[0,0]",
                                     "layers/attn/query/kernel[0,1]"]  # (layer, head)
  assert {b.size for b in query} == {8 * 4}
  value = hessian.select_blocks(all_blocks, ["attn/value/kernel"])
  assert len(value) == 8 and {b.size for b in value} == {8}
  v = _random_like(params)
  for block in query + value[:2]:
    leaf_v = jax.tree.leaves(v)[block.leaf_index]
    idx = hessian.block_indices(params, block)
    mask = np.asarray(hessian.block_mask(block)).ravel().astype(bool)
    got = np.asarray(_block_hvp_fn(loss_fn, params, block)(leaf_v)).ravel()
    np.testing.assert_allclose(got[mask], h[np.ix_(idx, idx)] @ np.asarray(leaf_v).ravel()[mask],
                               rtol=1e-8, atol=1e-12, err_msg=block.name)
    np.testing.assert_array_equal(got[~mask], 0.0)


def test_block_hvp_of_the_project_gpt2():
  params, loss_fn = _project_gpt2_problem()
  h = _hessian("gpt2")
  blocks = hessian.select_blocks(hessian.list_blocks(params, layer_axes=LAYERS),
                                 ["attn/query/kernel"])
  v = _random_like(params)
  for block in blocks:
    leaf_v = jax.tree.leaves(v)[block.leaf_index]
    idx = hessian.block_indices(params, block)
    mask = np.asarray(hessian.block_mask(block)).ravel().astype(bool)
    got = np.asarray(_block_hvp_fn(loss_fn, params, block)(leaf_v)).ravel()[mask]
    # float32 attention logits and LM logits inside the model bound the agreement.
    np.testing.assert_allclose(got, h[np.ix_(idx, idx)] @ np.asarray(leaf_v).ravel()[mask],
                               rtol=1e-4, atol=1e-5, err_msg=block.name)


def test_finer_partition_blocks():
  params, loss_fn, _, _ = _mlp_problem()
  rows = lambda path, leaf: (leaf.ndim - 1,)  # one block per row of every tensor
  blocks = hessian.list_blocks(params, rows, layer_axes=LAYERS)
  assert len([b for b in blocks if b.path == ("in", "kernel")]) == 4
  h = _hessian("mlp")
  block = [b for b in blocks if b.path == ("layers", "kernel")][3]
  assert block.index == (0, 3)
  idx = hessian.block_indices(params, block)
  leaf_v = jax.tree.leaves(_random_like(params))[block.leaf_index]
  mask = np.asarray(hessian.block_mask(block)).ravel().astype(bool)
  got = np.asarray(_block_hvp_fn(loss_fn, params, block)(leaf_v)).ravel()[mask]
  np.testing.assert_allclose(got, h[np.ix_(idx, idx)] @ np.asarray(leaf_v).ravel()[mask],
                             rtol=1e-8)


@pytest.mark.parametrize("problem", ["mlp", "transformer"])
def test_full_lanczos_reproduces_block_eigenvalues(problem):
  params, loss_fn = (_mlp_problem()[:2] if problem == "mlp" else _transformer_problem())
  h = _hessian(problem)
  blocks = hessian.list_blocks(params, layer_axes=LAYERS)
  if problem == "transformer":
    blocks = hessian.select_blocks(blocks, ["attn/query/kernel", "mlp/up/kernel"])
  full_rank = 0
  for i, block in enumerate(blocks[:4]):
    exact = hessian.eigenvalues(hessian.block_hessian(h, params, block))
    leaf = jax.tree.leaves(params)[block.leaf_index]
    probe = jax.random.normal(jax.random.key(i), leaf.shape) * hessian.block_mask(block)
    matvec = _block_hvp_fn(loss_fn, params, block)
    result = hessian.lanczos(matvec, probe, block.size, reorth="full")
    assert result.alphas.dtype == jnp.float64
    nodes, weights = hessian.ritz(result)
    np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-10)
    valid = int(result.valid.sum())
    ritz_values = np.linalg.eigvalsh(np.diag(result.alphas[:valid])
                                     + np.diag(result.betas[:valid - 1], 1)
                                     + np.diag(result.betas[:valid - 1], -1))
    if valid == block.size:
      full_rank += 1
      np.testing.assert_allclose(np.sort(nodes), exact, atol=1e-6, err_msg=block.name)
    else:  # repeated eigenvalues (a null space): Lanczos finds each distinct one once
      gap = lambda a, b: np.max(np.min(np.abs(a[:, None] - b[None]), axis=1))
      assert gap(ritz_values, exact) < 1e-6 and gap(exact, ritz_values) < 1e-6, block.name
  assert full_rank > 0


def test_lanczos_breakdown_is_masked():
  eigs = jnp.array([1.0, 2.0, 2.0, 5.0, 5.0, 5.0])
  matvec = lambda v: {"x": eigs * v["x"]}
  result = hessian.lanczos(matvec, {"x": jnp.ones(6)}, 10)
  assert int(result.valid.sum()) == 3  # three distinct eigenvalues: an invariant subspace
  nodes, weights = hessian.ritz(result)
  assert np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))
  top = np.argsort(-np.asarray(weights))[:3]
  np.testing.assert_allclose(np.sort(np.asarray(nodes)[top]), [1.0, 2.0, 5.0], atol=1e-10)
  np.testing.assert_allclose(np.sort(np.asarray(weights)[top]), [1 / 6, 2 / 6, 3 / 6], atol=1e-10)


def test_lanczos_probes_vmap_equals_sequential():
  h = jnp.diag(jnp.linspace(0.0, 3.0, 20))
  probes = jax.random.normal(jax.random.key(0), (3, 20))
  batched = hessian.lanczos_probes(lambda v: h @ v, probes, 8)
  sequential = hessian.lanczos_probes(lambda v: h @ v, probes, 8, sequential=True)
  np.testing.assert_allclose(batched.alphas, sequential.alphas, rtol=1e-12)


def test_slq_density_approaches_exact_density():
  params, loss_fn = _transformer_problem()
  h = _hessian("transformer")
  all_blocks = hessian.list_blocks(params, layer_axes=LAYERS)
  block = hessian.select_blocks(all_blocks, ["mlp/up/kernel"])[0]
  exact = hessian.exact_spectrum(hessian.eigenvalues(hessian.block_hessian(h, params, block)))
  errors = []
  for probes in (1, 64):
    slq = hessian.block_spectra(loss_fn, params, [block], jax.random.key(probes), probes, 40)
    slq = slq[block.name]
    grid = hessian.make_grid([exact, slq], num_points=2000, sigma2=1e-3)
    errors.append(np.sum(np.abs(hessian.density(slq, grid) - hessian.density(exact, grid)))
                  * grid.dx)
  assert errors[1] < 0.5 * errors[0] and errors[1] < 0.3, errors


def test_js_distance_properties():
  grid = np.linspace(-1, 1, 500)
  dx = grid[1] - grid[0]
  p = np.exp(-grid ** 2 / 0.02)
  q = np.exp(-(grid - 0.3) ** 2 / 0.05)
  p, q = p / (p.sum() * dx), q / (q.sum() * dx)
  far = np.exp(-(grid - 0.9) ** 2 / 1e-4)
  far = far / (far.sum() * dx)
  for variant in ("bounded", "paper"):
    assert hessian.js_distance(p, p, dx, variant) == pytest.approx(0.0, abs=1e-7)
    assert hessian.js_distance(p, q, dx, variant) == pytest.approx(
        hessian.js_distance(q, p, dx, variant), rel=1e-12)
  assert hessian.js_distance(p, far, dx) <= np.sqrt(np.log(2)) + 1e-12
  assert hessian.js_distance(p, far, dx) > 0.8
  np.testing.assert_allclose(hessian.js_distance(p, q, dx, "paper"),
                             hessian.js_distance(p, q, dx, "bounded") / np.sqrt(dx), rtol=1e-10)
  tiny = np.where(np.arange(p.size) == 0, 5e-324, p)  # subnormal tails must not give inf
  assert np.isfinite(hessian.js_distance(tiny, far * 0 + tiny[::-1], dx))
  m = hessian.js_matrix([p, q, far], dx)
  np.testing.assert_allclose(m, m.T)
  assert hessian.js0(m) == pytest.approx((m[0, 1] + m[0, 2] + m[1, 2]) / 3)


def test_heterogeneity_records_grid_and_sigma():
  spectra = {"a": hessian.exact_spectrum([1.0, 2.0]), "b": hessian.exact_spectrum([1.0, 2.0])}
  out = hessian.heterogeneity(spectra)
  assert out["js0"]["bounded"] == pytest.approx(0.0, abs=1e-7)
  assert {"lo", "hi", "num_points", "dx", "sigma2", "kernel_variance"} <= set(out["grid"])


def test_sharded_hvp_equals_unsharded():
  params, loss_fn, _, _ = _mlp_problem()
  v = _random_like(params)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  put = lambda t: jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec(
          *([None] * (x.ndim - 1)), "tensor" if x.shape[-1] % 2 == 0 else None))), t)
  sharded_params, sharded_v = put(params), put(v)
  out = jax.jit(lambda p, u: hessian.hvp(loss_fn, p, u))(sharded_params, sharded_v)
  expected = jax.jit(lambda p, u: hessian.hvp(loss_fn, p, u))(params, v)
  for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  assert len(jax.tree.leaves(out)[0].sharding.device_set) > 1
  spectrum = hessian.model_spectrum(loss_fn, sharded_params, jax.random.key(0), 2, 10)
  assert np.all(np.isfinite(spectrum.nodes))


def test_monitor_passes_updates_and_records_top_eigenvalues():
  params, loss_fn, _, _ = _mlp_problem()
  monitor = hessian.hessian_monitor(every=2, num_steps=36, layer_axes=LAYERS)
  opt = optax.chain(monitor, optax.sgd(0.1))
  state = opt.init(params)
  grads = jax.grad(loss_fn)(params)
  step = jax.jit(lambda g, s, p: opt.update(g, s, p, value_fn=loss_fn))
  updates, state = step(grads, state, params)
  expected_updates, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params), params)
  for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected_updates)):
    np.testing.assert_array_equal(a, b)
  h = _hessian("mlp")
  metrics = hessian.monitor_metrics(state[0], params, layer_axes=LAYERS)
  for block in hessian.list_blocks(params, layer_axes=LAYERS):
    top = hessian.eigenvalues(hessian.block_hessian(h, params, block))[-1]
    np.testing.assert_allclose(metrics["hessian/top_eig/" + block.name], top, rtol=1e-4)
  _, state2 = step(grads, state, params)
  assert int(state2[0].last_step) == 0
  logged = hessian.block_top_eigenvalues(loss_fn, params, jax.random.key(0), num_steps=8,
                                         layer_axes=LAYERS)
  assert set(logged) == set(metrics)


@pytest.mark.parametrize("call,name", [
    (lambda p, f, b: hessian.block_spectra(f, p, b, jax.random.key(0), num_probes=0), "num_probes"),
    (lambda p, f, b: hessian.block_spectra(f, p, b, jax.random.key(0), num_steps=0), "num_steps"),
    (lambda p, f, b: hessian.model_spectrum(f, p, jax.random.key(0), 0, 10), "num_probes"),
    (lambda p, f, b: hessian.model_spectrum(f, p, jax.random.key(0), 2, -1), "num_steps"),
    (lambda p, f, b: hessian.top_eigenvalues(f, p, b, jax.random.key(0), 0), "num_steps"),
    (lambda p, f, b: hessian.hessian_monitor(num_steps=0), "num_steps"),
    (lambda p, f, b: hessian.lanczos(lambda v: v, p, 0), "num_steps"),
])
def test_counts_below_one_are_refused_naming_the_argument(call, name):
  params, loss_fn, _, _ = _mlp_problem()
  chosen = hessian.list_blocks(params, layer_axes=LAYERS)[:1]
  with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
    call(params, loss_fn, chosen)
