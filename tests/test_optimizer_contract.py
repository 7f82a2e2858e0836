"""The optax contract, for every optimizer the factory registers and every raw transform of this
project, in one table (after optax's contrib/_common_test.py).

Every row (`ROWS`) goes through: one trace across jitted steps with a state of stable structure,
shapes and dtypes, in float32 and bfloat16 (updates keep the parameters' dtype); optax.chain;
optax.MultiSteps; optax.apply_if_finite; optax.partition with a frozen subtree;
optax.inject_hyperparams (a float hyper-parameter changed at run time, without a new trace); and
sharded parameters on the 8 virtual CPU devices, whose state keeps its shardings through a jitted
update. Every update gets the loss as optax's extra arguments (`value_fn`, and `obj_fn` under
optax.contrib.sophia's name), as the trainer's step passes them (train/step.py): loss-aware rows
(`hessian_monitor`, `sophia`) need them, the others ignore them. The per-algorithm maths lives in
the per-file tests.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import sharding
from bigmodel_jax.hessian.monitor import hessian_monitor
from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.optim.adam_mini import adam_mini
from bigmodel_jax.optim.l2sp import add_l2_towards_init
from bigmodel_jax.optim.lomo import adalomo, lomo, stacked_layers
from bigmodel_jax.optim.mofo import mofo
from bigmodel_jax.train import optimizers as factory
from configs import default


def _params(dtype=jnp.float32):
  """A stacked-layer tree shaped like the project's models (2 layers)."""
  keys = jax.random.split(jax.random.key(0), 4)
  params = {
      "embed": {"embedding": jax.random.normal(keys[0], (8, 4))},
      "layers": {"mlp": {"up": {"kernel": jax.random.normal(keys[1], (2, 4, 6)),
                                "bias": jnp.zeros((2, 6))}},
                 "attn": {"query": {"kernel": jax.random.normal(keys[2], (2, 4, 2, 2))}},
                 "attn_norm": {"scale": jnp.ones((2, 4))}},
  }
  return jax.tree.map(lambda x: x.astype(dtype), params)


def _moved(params):
  """The parameters some way from where `init` saw them (so that L2-SP's pull is not zero)."""
  return jax.tree.map(lambda p, g: p + (0.1 * g).astype(p.dtype), params, _grads(7, params))


def _grads(seed, params=None):
  params = _params() if params is None else params
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def _loss(params):
  """The loss passed as extra argument (Hessian = identity); MaskedNode subtrees have no leaves."""
  return sum(0.5 * jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params))


def _opt_config(name):
  opt = default.get_config().opt
  opt.update(name=name, schedule="constant", warmup_steps=0)  # a first step that moves
  opt.fraction = 0.5  # mofo: half of each block, so a step moves something in every block
  opt.l2sp = 0.1  # adamw_l2sp: a pull that shows
  return opt


@dataclasses.dataclass(frozen=True)
class Row:
  """One optimizer of the table.

  Attributes:
    make: learning rate (a float or an optax schedule) -> the transformation.
    inject: keyword hyper-parameters -> the transformation, for optax.inject_hyperparams.
    hyper: the float hyper-parameter that `inject` takes, and its value.
    extra: extra arguments of every update (the trainer's: the loss as value_fn and obj_fn).
    linear: whether the updates scale with the learning rate (optax.adafactor adds its weight
      decay after the learning rate).
  """

  make: Callable[..., optax.GradientTransformation]
  inject: Callable[..., optax.GradientTransformation] | None = None
  hyper: tuple[str, float] = ("learning_rate", 1e-2)
  extra: dict = dataclasses.field(default_factory=lambda: {"value_fn": _loss, "obj_fn": _loss})
  linear: bool = True


def _factory_row(name):
  def make(learning_rate):
    opt = _opt_config(name)
    if callable(learning_rate):  # the factory's own warmup + cosine schedule
      opt.update(schedule="cosine", warmup_steps=1, lr=1e-2)
    else:
      opt.lr = learning_rate
    return factory.make_optimizer(opt, total_steps=1000)[0]

  def inject(learning_rate):  # what make_optimizer builds, with the learning rate as a value
    opt = _opt_config(name)
    return optax.chain(optax.clip_by_global_norm(opt.max_grad_norm),
                       factory._REGISTRY[name](opt, learning_rate))

  return Row(make, inject, linear=name != "adafactor")


def _raw_row(make, **kwargs):
  return Row(make, make, **kwargs)


ROWS = {name: _factory_row(name) for name in factory.available_optimizers()}
ROWS.update({
    "raw_adam_mini": _raw_row(lambda learning_rate: adam_mini(
        learning_rate, weight_decay=0.1, layer_axes=LAYER_AXES)),
    "raw_mofo": _raw_row(lambda learning_rate: mofo(
        learning_rate, fraction=0.5, weight_decay=0.1, layer_axes=LAYER_AXES)),
    "raw_lomo": _raw_row(lambda learning_rate: lomo(learning_rate, weight_decay=0.1)),
    # AdaLomo declares its stacked layers with a function of (path, leaf), not a dict.
    "raw_adalomo": _raw_row(lambda learning_rate: adalomo(
        learning_rate, weight_decay=0.1, layer_axes=stacked_layers)),
    "raw_l2sp": Row(lambda _: add_l2_towards_init(0.1), add_l2_towards_init,
                    hyper=("strength", 0.1)),
    "raw_hessian_monitor": Row(
        lambda _: hessian_monitor(every=2, patterns=("attn_norm/scale",),
                                  layer_axes=LAYER_AXES, num_steps=2)),
})
NAMES = sorted(ROWS)
INJECTABLE = [name for name in NAMES if ROWS[name].inject is not None]


def _update(name, transformation):
  """`transformation.update` as the trainer calls it (optax.with_extra_args_support, the row's
  extra arguments bound), jitted (eager optax costs a compile per op)."""
  if isinstance(transformation, optax.MultiSteps):  # its update forwards extra arguments
    update = transformation.update
  else:
    update = optax.with_extra_args_support(transformation).update
  return jax.jit(functools.partial(update, **ROWS[name].extra))


def _init(transformation, params):
  return jax.jit(transformation.init)(params)


def _numpy(tree):
  """The leaves as NumPy arrays (a PRNG key as its key data)."""
  return jax.tree.map(lambda x: np.asarray(
      jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x),
      tree)


def _close(a, b, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      x.astype(np.float32), y.astype(np.float32), atol=atol, rtol=1e-5), _numpy(a), _numpy(b))


def _signature(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), tree)


def _dtypes(tree):
  return jax.tree.map(lambda x: x.dtype, tree)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_one_trace_a_stable_state_and_the_parameters_dtype(name, dtype):
  optimizer = ROWS[name].make(optax.cosine_decay_schedule(1e-2, 100))
  params = _params(dtype)
  update = _update(name, optimizer)
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(None)
    updates, state = update(grads, state, params)
    assert _dtypes(updates) == _dtypes(params)
    return optax.apply_updates(params, updates), state

  state = _init(optimizer, params)
  signature = _signature(state)
  for seed in range(3):
    params, state = step(params, state, _grads(seed, params))
    assert _signature(state) == signature
    assert jax.tree.structure(state) == jax.tree.structure(_init(optimizer, params))
    assert _dtypes(params) == _dtypes(_params(dtype))
  assert len(traces) == 1
  assert step._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_chain_with_an_inactive_clip_is_the_transformation_alone(name):
  params = _params()
  results = []
  for optimizer in (ROWS[name].make(1e-2),
                    optax.chain(optax.clip_by_global_norm(1e6), ROWS[name].make(1e-2))):
    p, state = params, _init(optimizer, params)
    step = _update(name, optimizer)
    for seed in range(3):
      updates, state = step(_grads(seed), state, p)
      p = optax.apply_updates(p, updates)
    results.append(p)
  _close(*results)


@pytest.mark.parametrize("name", NAMES)
def test_multi_steps_applies_the_mean_of_its_micro_batches(name):
  params, moved, g1, g2 = _params(), _moved(_params()), _grads(1), _grads(2)
  plain = ROWS[name].make(1e-2)
  expected, _ = _update(name, plain)(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2),
                                     _init(plain, params), moved)
  accumulated = optax.MultiSteps(ROWS[name].make(1e-2), every_k_schedule=2)
  state = _init(accumulated, params)
  update = _update(name, accumulated)
  first, state = update(g1, state, moved)
  second, _ = update(g2, state, moved)
  assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(first))
  _close(second, expected)


@pytest.mark.parametrize("name", NAMES)
def test_apply_if_finite_skips_a_non_finite_gradient(name):
  params, moved = _params(), _moved(_params())
  guarded = optax.apply_if_finite(ROWS[name].make(1e-2), max_consecutive_errors=3)
  state = _init(guarded, params)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), _grads(1))
  update = _update(name, guarded)
  updates, after = update(bad, state, moved)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
  assert int(after.notfinite_count) == 1
  jax.tree.map(np.testing.assert_array_equal, _numpy(after.inner_state), _numpy(state.inner_state))
  good, _ = update(_grads(2), after, moved)
  assert any(np.any(np.asarray(u)) for u in jax.tree.leaves(good))


@pytest.mark.parametrize("name", NAMES)
def test_partition_freezes_a_subtree_and_trains_the_rest_as_alone(name):
  params, grads = _params(), _grads(1)
  moved = _moved(params)
  labels = {"embed": jax.tree.map(lambda _: "frozen", params["embed"]),
            "layers": jax.tree.map(lambda _: "trained", params["layers"])}
  partitioned = optax.partition(
      {"trained": ROWS[name].make(1e-2), "frozen": optax.set_to_zero()}, labels)
  updates, _ = _update(name, partitioned)(grads, _init(partitioned, params), moved)
  assert not np.any(np.asarray(updates["embed"]["embedding"]))
  alone = ROWS[name].make(1e-2)
  sub = lambda tree: {"layers": tree["layers"]}
  expected, _ = _update(name, alone)(sub(grads), _init(alone, sub(params)), sub(moved))
  _close(updates["layers"], expected["layers"])


@pytest.mark.parametrize("name", INJECTABLE)
def test_inject_hyperparams_changes_a_hyper_parameter_without_a_new_trace(name):
  row = ROWS[name]
  key, value = row.hyper
  params, moved, grads = _params(), _moved(_params()), _grads(1)
  injected = optax.inject_hyperparams(row.inject)(**{key: value})
  traces = []

  @jax.jit
  def step(grads, state, params):
    traces.append(None)
    return _update(name, injected)(grads, state, params)

  state = _init(injected, params)
  updates, _ = step(grads, state, moved)
  reference = row.inject(**{key: value})
  _close(updates, _update(name, reference)(grads, _init(reference, params), moved)[0])
  state.hyperparams[key] = jnp.asarray(2 * value, state.hyperparams[key].dtype)
  doubled, _ = step(grads, state, moved)
  assert len(traces) == 1
  reference = row.inject(**{key: 2 * value})
  _close(doubled, _update(name, reference)(grads, _init(reference, params), moved)[0])
  if key == "learning_rate" and row.linear:
    _close(doubled, jax.tree.map(lambda u: 2 * u, updates))
  assert any(np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(doubled)))


SPECS = {  # fitted to the mesh by sharding.fit_spec, like the trainers' parameters
    "embed": {"embedding": PartitionSpec("fsdp", "tensor")},
    "layers": {"mlp": {"up": {"kernel": PartitionSpec(None, "fsdp", "tensor"),
                              "bias": PartitionSpec(None, "tensor")}},
               "attn": {"query": {"kernel": PartitionSpec(None, "fsdp", "tensor")}},
               "attn_norm": {"scale": PartitionSpec(None, "fsdp")}},
}


@pytest.mark.parametrize("name", NAMES)
def test_a_jitted_update_keeps_the_state_shardings(name):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  optimizer, params = ROWS[name].make(1e-2), _params()
  param_shardings = jax.tree.map(
      lambda spec, p: NamedSharding(mesh, sharding.fit_spec(spec, p.shape, mesh)), SPECS, params,
      is_leaf=lambda x: isinstance(x, PartitionSpec))
  state_shardings = sharding.opt_state_shardings(jax.eval_shape(optimizer.init, params),
                                                 param_shardings, optimizer, mesh)
  params = jax.device_put(params, param_shardings)
  state = jax.jit(optimizer.init, out_shardings=state_shardings)(params)
  grads = jax.device_put(_grads(1), param_shardings)
  update = _update(name, optimizer)
  updates, new_state = update(grads, state, params)
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
    assert after.sharding.is_equivalent_to(before.sharding, after.ndim), (
        name, before.sharding, after.sharding)
  update(grads, new_state, params)  # its own output back in: the same program
  assert update._cache_size() == 1
  for update, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert update.sharding.is_equivalent_to(p.sharding, p.ndim), (name, update.sharding)
