"""MoFO: fraction 1 is AdamW, a NumPy reference, the number of entries changed per block, the
exact k-th largest threshold, sharded vs unsharded (optax wrappers: test_optimizer_contract.py)."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import blocks
from bigmodel_jax.optim import MoFOState, native_select
from bigmodel_jax.optim import mofo as mofo_any_tree
from bigmodel_jax.optim import scale_by_mofo as scale_by_mofo_any_tree
from bigmodel_jax.optim.topk_threshold import block_k, kth_largest, kth_largest_magnitude
from bigmodel_jax.optim.weight_decay import decay_mask as rank_decay_mask

HYPER = dict(b1=0.9, b2=0.95, eps=1e-8)
LAYER_AXES = {"layers": 0}  # the leaves of SHAPES under "layers" stack layers on axis 0
mofo = functools.partial(mofo_any_tree, layer_axes=LAYER_AXES)
scale_by_mofo = functools.partial(scale_by_mofo_any_tree, layer_axes=LAYER_AXES)
decay_mask = functools.partial(rank_decay_mask, layer_axes=LAYER_AXES)
# name -> shape of a small model-like tree.
SHAPES = {
    "embed": {"embedding": (40, 16)},
    "layers": {"mlp": {"kernel": (2, 16, 300), "bias": (2, 300)},
               "norm": {"scale": (2, 16)}},
    "head": {"kernel": (16, 40), "bias": (40,)},
}


def _tree(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s) * scale, jnp.float32), SHAPES,
                      is_leaf=lambda x: isinstance(x, tuple))


def _run(optimizer, params, num_steps, jit=True):
  state = optimizer.init(params)
  update = jax.jit(optimizer.update) if jit else optimizer.update
  history = [params]
  for step in range(num_steps):
    updates, state = update(_tree(100 + step, 0.1), state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state


# Block axes of every leaf of SHAPES under the default partition, written out by hand.
REFERENCE_AXES = {"embed/embedding": (0, 1), "layers/mlp/kernel": (1, 2), "head/kernel": (0, 1)}


def _numpy_mofo(params, num_steps, lr, fraction, b1, b2, eps, weight_decay):
  """Independent float64 NumPy MoFO (authors' rule, |m| >= k-th largest |m| per block)."""
  flat = {"/".join(blocks.path_names(kp)): np.asarray(p, np.float64)
          for kp, p in jax.tree_util.tree_leaves_with_path(params)}
  m = {k: np.zeros_like(p) for k, p in flat.items()}
  v = {k: np.zeros_like(p) for k, p in flat.items()}
  for t in range(1, num_steps + 1):
    grads = {"/".join(blocks.path_names(kp)): np.asarray(g, np.float64)
             for kp, g in jax.tree_util.tree_leaves_with_path(_tree(100 + t - 1, 0.1))}
    for name, p in flat.items():
      g = grads[name]
      m[name] = b1 * m[name] + (1 - b1) * g
      v[name] = b2 * v[name] + (1 - b2) * g * g
      mask = np.ones(p.shape, bool)
      if name in REFERENCE_AXES:
        num_blocks = p.shape[0] if name.startswith("layers/") else 1
        rows = np.abs(m[name]).reshape(num_blocks, -1)
        k = max(1, int(rows.shape[1] * fraction))
        thr = -np.sort(-rows, axis=1)[:, k - 1:k]
        mask = (rows >= thr).reshape(p.shape)
      step = np.where(mask, m[name] / (1 - b1**t), 0) / (np.sqrt(v[name] / (1 - b2**t)) + eps)
      decayed = name.endswith(("/kernel", "/embedding"))
      flat[name] = p - lr * (step + (weight_decay * p if decayed else 0))
  return flat


def test_fraction_one_is_adamw_exactly():
  params = _tree(0)
  ours, _ = _run(mofo(1e-2, fraction=1.0, weight_decay=0.1, **HYPER), params, 5)
  theirs, _ = _run(optax.adamw(1e-2, weight_decay=0.1, mask=decay_mask, **HYPER), params, 5)
  for a, b in zip(jax.tree.leaves(ours[-1]), jax.tree.leaves(theirs[-1])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fraction", [0.05, 0.15])
def test_matches_numpy_reference_over_20_steps(fraction):
  params = _tree(0)
  history, _ = _run(mofo(1e-2, fraction=fraction, weight_decay=0.1, **HYPER), params, 20)
  expected = _numpy_mofo(params, 20, 1e-2, fraction, weight_decay=0.1, **HYPER)
  for kp, leaf in jax.tree_util.tree_leaves_with_path(history[-1]):
    name = "/".join(blocks.path_names(kp))
    np.testing.assert_allclose(leaf, expected[name], rtol=2e-5, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_entries_changed_per_block_is_k(fraction):
  # No decay, continuous random gradients (no ties): exactly k entries change per block per
  # step; biases and norms (dense) change everywhere.
  params = _tree(0)
  history, _ = _run(mofo(1e-2, fraction=fraction, **HYPER), params, 3)
  for before, after in itertools.pairwise(history):
    changed = jax.tree.map(lambda a, b: np.asarray(a != b), before, after)
    for name, axes in REFERENCE_AXES.items():
      leaf = changed
      for part in name.split("/"):
        leaf = leaf[part]
      per_block = leaf.sum(axis=axes)
      size = int(np.prod([leaf.shape[a] for a in axes]))
      assert (per_block == max(1, int(size * fraction))).all(), (name, per_block)
    assert changed["layers"]["mlp"]["bias"].all() and changed["head"]["bias"].all()


def test_ties_with_the_threshold_are_all_selected():
  # Entries tied with the k-th largest |m| all move (the documented |m| >= thr rule).
  grads = {"w": jnp.asarray([[3.0, -2.0, 2.0, 2.0, 1.0, 0.5]])}
  updates, _ = scale_by_mofo(fraction=0.34).update(grads, scale_by_mofo(0.34).init(grads))
  np.testing.assert_array_equal(np.asarray(updates["w"]) != 0, [[1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize("shape,axes", [((3, 50, 70), (1, 2)), ((9000,), (0,)),
                                        ((2, 5000), (1,)), ((300, 20), (0,)),
                                        ((4, 64, 80), (0, 2))])
@pytest.mark.parametrize("k_of", [lambda n: 1, lambda n: 7, lambda n: n])
def test_kth_largest_is_exact(shape, axes, k_of):
  rng = np.random.default_rng(0)
  x = np.abs(rng.standard_cauchy(size=shape)).astype(np.float32)
  x.reshape(-1)[::7] = 0.0  # ties at zero
  size = int(np.prod([shape[a] for a in axes]))
  k = k_of(size)
  got = np.asarray(jax.jit(kth_largest, static_argnums=(1, 2))(jnp.asarray(x), k, axes))
  rows = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim)).reshape(-1, size)
  np.testing.assert_array_equal(got.reshape(-1), -np.sort(-rows, axis=1)[:, k - 1])


@pytest.mark.parametrize("shape,axes", [((2, 300_001), (1,)), ((3, 70, 90), (1, 2)),
                                        ((5000, 2), (0,))])
def test_kth_largest_magnitude_native_and_jnp_are_exact(shape, axes):
  # Trailing float32 blocks take the native CPU kernel (2 threads on the 300,001-entry rows);
  # (5000, 2) along axis 0 the jnp radix select. Signed values, ties, zeros, subnormals.
  assert native_select.available(), "the native kernel did not build (is a C++ compiler there?)"
  rng = np.random.default_rng(1)
  x = rng.standard_cauchy(size=shape).astype(np.float32)
  flat = x.reshape(-1)
  flat[::5] = 0.0
  tied = np.arange(1, flat.size - 1, 11)
  flat[tied + 1] = -flat[tied]  # equal magnitudes of opposite signs
  flat[3::97] = np.float32(1e-40)
  size = int(np.prod([shape[a] for a in axes]))
  rows = np.moveaxis(np.abs(x), axes, range(x.ndim - len(axes), x.ndim)).reshape(-1, size)
  for k in (1, 7, size // 10, size):
    got = jax.jit(kth_largest_magnitude, static_argnums=(1, 2))(jnp.asarray(x), k, axes)
    np.testing.assert_array_equal(np.asarray(got).reshape(-1), -np.sort(-rows, axis=1)[:, k - 1])
  traced_k = jax.jit(lambda x, k: kth_largest_magnitude(x, k, axes))(jnp.asarray(x), size // 3)
  np.testing.assert_array_equal(np.asarray(traced_k).reshape(-1),
                                -np.sort(-rows, axis=1)[:, size // 3 - 1])


def test_native_build_is_cached_and_a_missing_compiler_raises(tmp_path, monkeypatch):
  path = native_select.build_library()  # built by available() above: found, not rebuilt
  assert path == native_select.build_library() and os.path.getsize(path) > 0
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(OSError):
    native_select.build_library()
  assert not [p for p in os.listdir(tmp_path / "bigmodel_jax") if p.endswith(".partial")]


def test_block_k_rule():
  assert block_k(1000, 0.15) == 150 and block_k(5, 0.1) == 1 and block_k(7, 1.0) == 7
  assert int(block_k(1000, jnp.float32(0.15))) == 150


def test_sharded_equals_unsharded():
  mesh = jax.make_mesh((4, 2), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  params = _tree(0)
  specs = {"embed": {"embedding": PartitionSpec("a", "b")},
           "layers": {"mlp": {"kernel": PartitionSpec(None, "a", "b"), "bias": PartitionSpec()},
                      "norm": {"scale": PartitionSpec()}},
           "head": {"kernel": PartitionSpec("b", "a"), "bias": PartitionSpec()}}
  sharded = jax.tree.map(lambda p, s: jax.device_put(p, NamedSharding(mesh, s)), params, specs,
                         is_leaf=lambda x: isinstance(x, PartitionSpec))
  optimizer = mofo(1e-2, fraction=0.1, weight_decay=0.1, **HYPER)
  unsharded_history, _ = _run(optimizer, params, 4)
  sharded_history, _ = _run(optimizer, sharded, 4)
  assert len(sharded_history[-1]["embed"]["embedding"].sharding.device_set) == 8
  for a, b in zip(jax.tree.leaves(sharded_history[-1]), jax.tree.leaves(unsharded_history[-1])):
    np.testing.assert_array_equal(a, b)


def test_state_and_errors():
  params = _tree(0)
  state = scale_by_mofo().init(params)
  assert isinstance(state, MoFOState)
  assert jax.tree.map(jnp.shape, state.mu) == jax.tree.map(jnp.shape, params)
  for bad in (0.0, jnp.float32(1.5), np.float64(-0.1)):
    with pytest.raises(ValueError, match="fraction"):
      scale_by_mofo(fraction=bad)
  with pytest.raises(ValueError, match="block size"):
    kth_largest(jnp.ones((4, 5)), 6, (1,))


def test_update_time_benchmark_runs():
  from experiments import bench_mofo

  result = bench_mofo.benchmark("gpt2:tiny", fraction=0.1, repeats=1)
  assert result["num_params"] > 0
  assert np.isfinite(result["median_ratio_mofo_over_adamw"])
  assert set(result["median_s"]) == {"adamw", "mofo", "selection", "read_pass"}
  assert result["floor_ratio"] > 1
