"""The optax contract, for every optimizer the factory registers and every raw transform of this
project, in one table (after optax's contrib/_common_test.py): one trace across steps with a
stable state, optax.MultiSteps, optax.apply_if_finite, optax.partition with a frozen subtree,
and (raw transforms) optax.inject_hyperparams. Dtype preservation: tests/test_factory.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.optim import factory
from bigmodel_jax.optim.adam_mini import adam_mini
from bigmodel_jax.optim.lomo import adalomo, lomo, stacked_layers
from bigmodel_jax.optim.mofo import mofo
from configs import default

NAMES = factory.available_optimizers()


def _params():
  """A stacked-layer tree shaped like the project's models (2 layers)."""
  keys = jax.random.split(jax.random.key(0), 4)
  return {
      "embed": {"embedding": jax.random.normal(keys[0], (8, 4))},
      "layers": {"mlp": {"up": {"kernel": jax.random.normal(keys[1], (2, 4, 6)),
                                "bias": jnp.zeros((2, 6))}},
                 "attn": {"query": {"kernel": jax.random.normal(keys[2], (2, 4, 2, 2))}},
                 "attn_norm": {"scale": jnp.ones((2, 4))}},
  }


def _grads(seed):
  return jax.tree.map(lambda p, k: jax.random.normal(k, p.shape),
                      _params(), _key_tree(seed))


def _key_tree(seed):
  leaves, treedef = jax.tree.flatten(_params())
  return treedef.unflatten(list(jax.random.split(jax.random.key(seed), len(leaves))))


def _optimizer(name):
  opt = default.get_config().opt
  opt.update(name=name, schedule="constant", warmup_steps=0)  # a first step that moves
  opt.fraction = 0.5  # mofo: half of each block, so a step moves something in every block
  return factory.make_optimizer(opt, total_steps=1000)[0]


def _close(a, b, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5), a, b)


def _signature(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), tree)


@pytest.mark.parametrize("name", NAMES)
def test_one_trace_and_a_stable_state(name):
  optimizer, params = _optimizer(name), _params()
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(None)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = optimizer.init(params)
  signature = _signature(state)
  for seed in range(3):
    params, state = step(params, state, _grads(seed))
    assert _signature(state) == signature
    assert jax.tree.structure(state) == jax.tree.structure(optimizer.init(params))
  assert len(traces) == 1


@pytest.mark.parametrize("name", NAMES)
def test_multi_steps_applies_the_mean_of_its_micro_batches(name):
  params, g1, g2 = _params(), _grads(1), _grads(2)
  plain = _optimizer(name)
  expected, _ = plain.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), plain.init(params),
                             params)
  accumulated = optax.MultiSteps(_optimizer(name), every_k_schedule=2)
  state = accumulated.init(params)
  first, state = accumulated.update(g1, state, params)
  second, _ = accumulated.update(g2, state, params)
  assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(first))
  _close(second, expected)


@pytest.mark.parametrize("name", NAMES)
def test_apply_if_finite_skips_a_non_finite_gradient(name):
  params = _params()
  guarded = optax.apply_if_finite(_optimizer(name), max_consecutive_errors=3)
  state = guarded.init(params)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), _grads(1))
  updates, after = jax.jit(guarded.update)(bad, state, params)
  assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
  assert int(after.notfinite_count) == 1
  _close(after.inner_state, state.inner_state, atol=0)
  good, _ = jax.jit(guarded.update)(_grads(2), after, params)
  assert any(np.any(np.asarray(u)) for u in jax.tree.leaves(good))


@pytest.mark.parametrize("name", NAMES)
def test_partition_freezes_a_subtree_and_trains_the_rest_as_alone(name):
  params, grads = _params(), _grads(1)
  labels = {"embed": "frozen", "layers": jax.tree.map(lambda _: "trained", params["layers"])}
  labels["embed"] = jax.tree.map(lambda _: "frozen", params["embed"])
  partitioned = optax.partition({"trained": _optimizer(name), "frozen": optax.set_to_zero()},
                                labels)
  updates, _ = partitioned.update(grads, partitioned.init(params), params)
  assert not np.any(np.asarray(updates["embed"]["embedding"]))
  alone = _optimizer(name)
  sub_params, sub_grads = {"layers": params["layers"]}, {"layers": grads["layers"]}
  expected, _ = alone.update(sub_grads, alone.init(sub_params), sub_params)
  _close(updates["layers"], expected["layers"])


RAW = {
    "adam_mini": lambda learning_rate: adam_mini(learning_rate, layer_axes=LAYER_AXES),
    "mofo": lambda learning_rate: mofo(learning_rate, fraction=0.5, layer_axes=LAYER_AXES),
    "lomo": lomo,
    "adalomo": lambda learning_rate: adalomo(learning_rate, layer_axes=stacked_layers),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_inject_hyperparams_controls_the_learning_rate(name):
  params, grads = _params(), _grads(1)
  injected = optax.inject_hyperparams(RAW[name])(learning_rate=1e-2)
  state = injected.init(params)
  updates, _ = jax.jit(injected.update)(grads, state, params)
  state.hyperparams["learning_rate"] = jnp.asarray(2e-2)
  doubled, _ = jax.jit(injected.update)(grads, state, params)
  _close(doubled, jax.tree.map(lambda u: 2 * u, updates))
  reference, _ = RAW[name](1e-2).update(grads, RAW[name](1e-2).init(params), params)
  _close(updates, reference)
