"""The sharded train step: mesh-independence and exact gradient accumulation."""

import jax
import numpy as np
import optax
import pytest

from bigmodel_jax import losses, sharding
from bigmodel_jax.train import builders
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.state import init_train_state
from bigmodel_jax.train.step import make_train_step
from bigmodel_jax.train.task import config_token_loss
from configs import default

VOCAB = 64


def _config(architecture="gpt2"):
  c = default.get_config()
  c.model.update(architecture=architecture, num_layers=2, num_heads=4, num_kv_heads=2 if
                 architecture == "llama" else 4, head_dim=8, embed_dim=32, mlp_dim=64,
                 max_seq_len=16, tie_embeddings=architecture == "gpt2")
  c.opt.update(warmup_steps=2)
  return c


def _batches(num, batch_size=8, seq_len=16, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(num):
    tokens = rng.integers(0, VOCAB, size=(batch_size, seq_len + 1), dtype=np.int32)
    weights = (rng.random((batch_size, seq_len)) > 0.1).astype(np.float32)
    yield {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}


def _run(config, mesh, steps=3, grad_accum_steps=1):
  rules = tuple(config.sharding_rules)
  model_config = builders.model_config(config.model, VOCAB)
  optimizer, schedule = make_optimizer(config.opt, total_steps=100)
  graphdef, state, shardings = init_train_state(model_config, optimizer, mesh, rules, seed=0)
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(make_train_step(graphdef, optimizer, schedule, grad_accum_steps),
                 in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                 donate_argnums=0)
  losses = []
  for batch in _batches(steps):
    state, metrics = step(state, jax.device_put(batch, batch_sharding))
    losses.append(float(metrics["loss"]))
  assert jax.tree.map(lambda x: x.sharding, state) == shardings  # shardings survive steps
  return jax.device_get(state.params), losses


def _assert_params_close(actual, expected):
  def check(path, a, b):
    # GPT-2's key bias has an identically zero gradient (softmax is shift-invariant), so AdamW
    # turns the rounding noise of a different reduction order into eps-limited steps of ~1e-6.
    atol = 1e-5 if "key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(
        path) else 1e-7
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=jax.tree_util.keystr(path))

  jax.tree_util.tree_map_with_path(check, actual, expected)


def _single_device_mesh():
  return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.mark.parametrize("architecture, mesh_shape", [
    ("gpt2", {"data": 2, "fsdp": 4, "tensor": 1}),
    ("llama", {"data": 2, "fsdp": 2, "tensor": 2}),
])
def test_sharded_run_matches_single_device(architecture, mesh_shape):
  config = _config(architecture)
  single, single_losses = _run(config, _single_device_mesh())
  sharded, sharded_losses = _run(config, sharding.make_mesh(mesh_shape))
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  _assert_params_close(sharded, single)


def test_gradient_accumulation_equals_the_whole_batch():
  config = _config("llama")
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:2])
  whole, whole_losses = _run(config, mesh)
  accumulated, accumulated_losses = _run(config, mesh, grad_accum_steps=4)
  np.testing.assert_allclose(accumulated_losses, whole_losses, rtol=1e-5)
  _assert_params_close(accumulated, whole)


def test_batch_that_does_not_split_over_the_mesh_names_the_key():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  with pytest.raises(ValueError, match="train.global_batch_size"):
    builders.check_batch_divisibility(12, 1, mesh)
  with pytest.raises(ValueError, match="train.grad_accum_steps"):
    builders.check_batch_divisibility(16, 4, mesh)


def test_bad_model_config_names_the_key():
  config = _config("gpt2")
  config.model.embed_dim = 30
  with pytest.raises(ValueError, match=r"model\.embed_dim"):
    builders.model_config(config.model, VOCAB)
  config = _config("llama")
  config.model.update(num_heads=6, num_kv_heads=4, embed_dim=48)
  with pytest.raises(ValueError, match=r"model\.num_heads"):
    builders.model_config(config.model, VOCAB)
  config.model.update(num_heads=4, vocab_size=10)
  with pytest.raises(ValueError, match=r"model\.vocab_size"):
    builders.model_config(config.model, VOCAB)


def test_training_loss_is_selected_by_config():
  config = _config("llama")
  assert config_token_loss(config.loss) is losses.cross_entropy
  config.loss.update(name="gem", beta=0.5)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:2])
  model_config = builders.model_config(config.model, VOCAB)
  optimizer, schedule = make_optimizer(config.opt, total_steps=100)
  graphdef, state, _ = init_train_state(model_config, optimizer, mesh,
                                        tuple(config.sharding_rules), seed=0)
  batch = next(_batches(1))
  gem_step = make_train_step(graphdef, optimizer, schedule,
                             token_loss=config_token_loss(config.loss))
  ce_step = make_train_step(graphdef, optimizer, schedule)
  _, gem_metrics = jax.jit(gem_step)(state, batch)
  _, ce_metrics = jax.jit(ce_step)(state, batch)
  assert float(gem_metrics["loss"]) != pytest.approx(float(ce_metrics["loss"]))
  config.loss.name = "focal"
  with pytest.raises(ValueError, match="loss.name"):
    config_token_loss(config.loss)


def test_the_optimizer_receives_optax_extra_arguments():
  config = _config()
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  received = {}

  def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
    received.update(value=value, grad=grad, value_fn_value=value_fn(params),
                    obj_fn_value=extra["obj_fn"](params), extra=sorted(extra))
    return updates, state

  recorder = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  model_config = builders.model_config(config.model, VOCAB)
  graphdef, state, _ = init_train_state(model_config, recorder, mesh,
                                       tuple(config.sharding_rules), seed=0)
  batch = next(_batches(1))
  _, metrics = make_train_step(graphdef, recorder, optax.constant_schedule(0.0))(state, batch)
  assert received["extra"] == ["obj_fn"]
  np.testing.assert_allclose(received["value"], metrics["loss"], rtol=1e-6)
  np.testing.assert_allclose(received["value_fn_value"], metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(received["obj_fn_value"], metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(optax.tree.norm(received["grad"]), metrics["grad_norm"], rtol=1e-6)


def test_a_loss_aware_optax_optimizer_trains_from_its_config_name():
  config = _config()
  config.opt.update(name="sophia", lr=1e-3)
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  params, losses = _run(config, mesh, steps=3)
  assert all(np.isfinite(losses))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
