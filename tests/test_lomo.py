"""LOMO / AdaLomo: transforms against NumPy, factory, fused step == unfused."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bigmodel_jax.models import create_model, from_preset
from bigmodel_jax.optim import AdaLomoState, adalomo, lomo, stacked_layers
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train.fused_step import make_fused_train_step
from bigmodel_jax.train.optimizers import decay_mask
from bigmodel_jax.train.state import TrainState
from bigmodel_jax.train.step import make_train_step

HYPER = dict(decay_rate=0.8, eps=1e-30, clip_threshold=1.0, param_scale_eps=1e-3)


def _np_adalomo_tensor(p, grads, lr, wd):
  """AdaLomo on one tensor, written from the paper / the authors' code."""
  p = p.astype(np.float64)
  row = col = v = 0.0
  for t, g in enumerate(grads, start=1):
    beta2 = 1 - t ** -HYPER["decay_rate"]
    g2 = g * g + HYPER["eps"]
    if p.ndim >= 2:
      row = beta2 * row + (1 - beta2) * g2.mean(-1)
      col = beta2 * col + (1 - beta2) * g2.mean(-2)
      u = g / np.sqrt((row / row.mean(-1, keepdims=True))[..., None] * col[..., None, :])
    else:
      v = beta2 * v + (1 - beta2) * g2
      u = g / np.sqrt(v)
    u = u / max(1.0, np.sqrt(np.mean(u * u)) / HYPER["clip_threshold"])
    scale = lr * max(HYPER["param_scale_eps"], np.sqrt(np.mean(p * p)))
    p = p * (1 - scale * wd) - scale * u
  return p


def test_adalomo_matches_numpy_per_layer():
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=(4,)) * 0.01,
            "layers": {"kernel": rng.normal(size=(2, 3, 4)), "scale": rng.normal(size=(2, 6))}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(3)]
  opt = adalomo(0.1, weight_decay=0.2, layer_axes=stacked_layers, **HYPER)
  p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = opt.init(p)
  for g in grads:
    updates, state = jax.jit(opt.update)(jax.tree.map(jnp.float32, g), state, p)
    p = optax.apply_updates(p, updates)
  assert isinstance(state[0], AdaLomoState) and int(state[0].count) == 3
  for key in ("w", "b"):
    np.testing.assert_allclose(p[key], _np_adalomo_tensor(params[key], [g[key] for g in grads],
                                                          0.1, 0.2), rtol=1e-4, atol=1e-6)
  for key in ("kernel", "scale"):
    for layer in range(2):
      expected = _np_adalomo_tensor(params["layers"][key][layer],
                                    [g["layers"][key][layer] for g in grads], 0.1, 0.2)
      np.testing.assert_allclose(p["layers"][key][layer], expected, rtol=1e-4, atol=1e-6)


def test_lomo_is_sgd_with_element_wise_clipping():
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  grads = {"w": jnp.full((3, 2), 2.0), "b": jnp.ones(2)}
  updates, _ = lomo(0.5, clip_grad_value=1.5).update(grads, lomo(0.5).init(params), params)
  np.testing.assert_allclose(updates["w"], -0.75)


GPT2 = from_preset("gpt2", vocab_size=32, num_layers=3, num_heads=2,
                   num_kv_heads=2, head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=8,
                   tie_embeddings=True)
LLAMA = from_preset("llama", vocab_size=32, num_layers=3, num_heads=2,
                    num_kv_heads=1, head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=8,
                    tie_embeddings=False)
CASES = {
    "gpt2_adalomo": (GPT2, adalomo(0.05, weight_decay=0.1, weight_decay_mask=decay_mask,
                                   layer_axes=stacked_layers)),
    "llama_lomo": (LLAMA, lomo(0.5, weight_decay=0.1, weight_decay_mask=decay_mask)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_step_equals_unfused(case):
  config, opt = CASES[case]
  params = nnx.to_pure_dict(nnx.split(create_model(config, nnx.Rngs(0)), nnx.Param)[1])
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 32, (4, 8)), jnp.int32)
  batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, 1),
           "weights": jnp.asarray(rng.random((4, 8)) > 0.2, jnp.float32)}
  reference = optax.chain(optax.clip_by_global_norm(0.5), opt)
  unfused = jax.jit(make_train_step(abstract_model(config)[0], reference, lambda _: 0.0))
  fused = jax.jit(make_fused_train_step(config, opt, lambda _: 0.0, max_grad_norm=0.5))
  step = jnp.zeros((), jnp.int32)
  s1, s2 = TrainState(step, params, reference.init(params)), TrainState(step, params,
                                                                         opt.init(params))
  for _ in range(2):
    s1, m1 = unfused(s1, batch)
    s2, m2 = fused(s2, batch)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m2["update_norm"], m1["update_norm"], rtol=1e-3)
    assert bool(m2["finite"])
    assert float(m1["grad_norm"]) > 0.5  # clipping is active
  # The key bias's gradient is exactly zero in exact arithmetic (softmax shift invariance), so
  # AdaLomo's normalised update of it is rounding noise: not compared.
  def check(path, a, b):
    if "key/bias" not in jax.tree_util.keystr(path, simple=True, separator="/"):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=str(path))

  jax.tree_util.tree_map_with_path(check, s1.params, s2.params)
  assert jax.tree.structure(s1.opt_state[1]) == jax.tree.structure(s2.opt_state)


def test_lomo_memory_writes_every_output(tmp_path, monkeypatch):
  from figure_checks import check_saved_figures

  from configs import lomo_memory as lomo_memory_config
  from experiments import lomo_memory

  saved = check_saved_figures(monkeypatch, lomo_memory)
  config = lomo_memory_config.get_config("small")
  config.memory.update(models=("gpt2:tiny",), optimizers=("adamw", "lomo"),
                       batch_size=8)  # one row per device of the 8
  summary = lomo_memory.run(config, str(tmp_path))
  assert summary["models"]["gpt2:tiny"]["ratio_to_adamw"]["lomo"] < 1
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["memory"]["optimizers"] == ["adamw", "lomo"]
  for name in ("metrics.jsonl", "summary.json", "memory.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert saved == [str(tmp_path / "memory.png")]


def test_train_lomo_runs_every_optimizer_through_the_trainer(tmp_path):
  from configs import lomo as lomo_config
  from experiments import train_lomo

  config = lomo_config.get_config("small")
  summary = train_lomo.run(config, str(tmp_path))
  for name in config.lomo.train_optimizers:
    row = summary["optimizers"][name]
    assert np.isfinite(row["final_train_loss"]) and np.isfinite(row["final_eval_loss"])
    assert row["fused"] == (name in config.lomo.fused_optimizers)
    with open(tmp_path / name / "config.json") as f:
      run = json.load(f)
    assert run["opt"]["name"] == name and run["opt"]["lr"] == config.lomo[f"lr_{name}"]
    assert run["opt"]["max_grad_norm"] == (0.0 if row["fused"] else config.opt.max_grad_norm)
    assert (tmp_path / name / "checkpoints").is_dir()  # the trainer's checkpoints
  again = train_lomo.run(config, str(tmp_path))  # finished runs are kept, not retrained
  assert again["optimizers"]["lomo"]["final_eval_loss"] == summary["optimizers"]["lomo"][
      "final_eval_loss"]
  assert os.path.getsize(tmp_path / "loss_curves.png") > 0
