"""Semi-open models (Huang et al., arXiv 2410.11182): layer replacement, RD, n*, freezing, and
the experiment end to end (spec A.7.10, A1-A4)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax.models import from_preset
from bigmodel_jax.semi_open import (
  fresh_params,
  layer_mask,
  rd_curve,
  replace_layers,
  scara_choice,
  trainable_mask,
)
from bigmodel_jax.semi_open.recovery import MaskedTrainer
from bigmodel_jax.semi_open.recovery_difficulty import make_full_loss
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train.derived_config import derive
from configs import default
from configs import semi_open as semi_open_config

CONFIG = from_preset("gpt2", vocab_size=32, num_layers=4, num_heads=2,
                     num_kv_heads=2, head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=16,
                     tie_embeddings=True)


def _batches(seed: int = 0, num: int = 2) -> dict:
  tokens = np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (num, 4, 9))
  return {"inputs": jnp.asarray(tokens[..., :-1], jnp.int32),
          "targets": jnp.asarray(tokens[..., 1:], jnp.int32),
          "weights": jnp.ones((num, 4, 8), jnp.float32)}


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_replace_layers_swaps_exactly_the_chosen_slices(architecture):
  config = CONFIG if architecture == "gpt2" else from_preset(
      "llama", vocab_size=32, num_layers=4, num_heads=2, num_kv_heads=1,
      head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=16, tie_embeddings=False)
  victim, fresh = fresh_params(config, 0), fresh_params(config, 1)
  replaced = replace_layers(victim, fresh, layer_mask(4, (1, 3)))
  for path, leaf in jax.tree_util.tree_leaves_with_path(replaced["layers"]):
    old = _at(victim["layers"], path)
    new = _at(fresh["layers"], path)
    for i in range(4):
      expected = new[i] if i in (1, 3) else old[i]
      np.testing.assert_array_equal(np.asarray(leaf[i]), np.asarray(expected))
    if path[-1].key == "kernel":
      assert not np.array_equal(np.asarray(leaf[1]), np.asarray(old[1]))
  for key in victim:
    if key != "layers":
      assert replaced[key] is victim[key]


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_fan_in_reinit_scale():
  fresh = fresh_params(CONFIG, 0, "fan_in")
  up = np.asarray(fresh["layers"]["mlp"]["up"]["kernel"])  # [L, 16, 32]
  out = np.asarray(fresh["layers"]["attn"]["out"]["kernel"])  # [L, 2, 8, 16]
  assert up.std() == pytest.approx(1 / np.sqrt(16), rel=0.15)
  assert out.std() == pytest.approx(1 / np.sqrt(16), rel=0.15)
  np.testing.assert_array_equal(fresh["layers"]["attn_norm"]["scale"], 1.0)
  with pytest.raises(ValueError, match="reinit_scale"):
    fresh_params(CONFIG, 0, "xavier")


def test_rd_zero_is_the_models_loss_and_rd_is_deterministic():
  graphdef, _ = abstract_model(CONFIG)
  victim = fresh_params(CONFIG, 0)
  draws = [fresh_params(CONFIG, 5), fresh_params(CONFIG, 6)]
  batches = _batches()
  curve = rd_curve(graphdef, victim, draws, batches, 4)
  logits = jax.nn.log_softmax(jax.vmap(
      lambda b: _model_logits(graphdef, victim, b))(batches["inputs"]))
  ce = -jnp.take_along_axis(logits, batches["targets"][..., None], -1).mean()
  np.testing.assert_allclose(curve["rd"][:, 0], float(ce), atol=1e-6)
  full = [float(make_full_loss(graphdef)(d, batches)) for d in draws]
  np.testing.assert_allclose(curve["rd_full"], full, atol=1e-6)
  assert not np.allclose(curve["rd"][0, 1:], curve["rd"][0, 0])  # replacing blocks matters
  again = rd_curve(graphdef, victim, draws, batches, 4)
  np.testing.assert_array_equal(again["rd"], curve["rd"])


def _model_logits(graphdef, params, inputs):
  from flax import nnx
  return nnx.merge(graphdef, params)(inputs)


def test_scara_choice_follows_the_codes_rule():
  rd = [1.0, 3.0, 4.7, 5.0]  # spec A3: 1.2 * 3.0 = 3.6 < 5.5; 1.2 * 4.7 = 5.64 >= 5.5
  assert scara_choice(rd, 5.5, 0.2) == 2
  assert scara_choice(rd, (1 + 0.2) * 3.0, 0.2) == 1  # equality qualifies
  assert scara_choice(rd, 7.0, 0.2) == 3  # nothing in [1, L-1] qualifies: fully closed (L)
  assert scara_choice([1.0, 1.0, 1.0, 9.0], 5.0, 0.2) == 3  # n = L is never a qualifying n


def _adamw(weight_decay: float = 0.1):
  opt = default.get_config().opt
  opt.update(name="adamw", lr=1e-2, weight_decay=weight_decay, schedule="constant",
             warmup_steps=0)
  return opt


def test_frozen_slices_stay_bitwise_under_adamw_with_weight_decay():
  graphdef, _ = abstract_model(CONFIG)
  params = fresh_params(CONFIG, 0)
  params["layers"]["attn"]["out"]["bias"] = params["layers"]["attn"]["out"]["bias"].at[
      0, 0].set(-0.0)  # a negative zero must stay negative
  trainer = MaskedTrainer(graphdef, _adamw(), 12, params)
  frozen_blocks = np.array([True, False, True, False])
  mask = trainable_mask(params, jnp.asarray(~frozen_blocks), False)
  batches = jax.tree.map(lambda x: jnp.tile(x, (6, 1, 1)), _batches())
  state, metrics = trainer.train(trainer.init(params, mask), batches)
  assert int(state.step) == 12 and np.isfinite(metrics["loss"]).all()
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params["layers"]):
    before = np.asarray(_at(params["layers"], path))
    after = np.asarray(leaf)
    assert after[frozen_blocks].tobytes() == before[frozen_blocks].tobytes(), path
    if path[-1].key == "kernel":
      assert not np.array_equal(after[~frozen_blocks], before[~frozen_blocks]), path
  assert np.signbit(state.params["layers"]["attn"]["out"]["bias"][0, 0])
  for key in ("embed", "pos_embed", "final_norm"):
    for a, b in zip(jax.tree.leaves(state.params[key]), jax.tree.leaves(params[key])):
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_masking_gradients_alone_would_move_frozen_slices():
  """Why the updates are masked: with zero gradients AdamW's weight decay still moves a slice."""
  graphdef, _ = abstract_model(CONFIG)
  params = fresh_params(CONFIG, 0)
  everything = trainable_mask(params, jnp.ones((4,), bool), True)
  trainer = MaskedTrainer(graphdef, _adamw(), 2, params)
  zero_weights = {**_batches(num=2), "weights": jnp.zeros((2, 4, 8)) + 1e-30}
  state, _ = trainer.train(trainer.init(params, everything), zero_weights)
  before = np.asarray(params["layers"]["mlp"]["up"]["kernel"])
  assert not np.array_equal(np.asarray(state.params["layers"]["mlp"]["up"]["kernel"]), before)


def test_config_rejects_unknown_settings():
  with pytest.raises(ValueError, match="settings"):
    semi_open_config.get_config("medium")


def test_small_experiment_writes_every_output(tmp_path):
  from experiments import semi_open
  config = semi_open_config.get_config("small")
  summary = semi_open.run(config, str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "summary.json", "rd_curve.png", "transition.png",
               "rd_vs_arr.png", "victim/summary.json", "victim/metrics.jsonl"):
    assert os.path.getsize(tmp_path / name) > 0, name
  assert os.path.isdir(tmp_path / "victim" / "checkpoints")  # the victim's trainer run
  written = json.loads((tmp_path / "summary.json").read_text())
  assert set(written["criteria"]) == {"A2", "A5", "E1", "E2", "E3", "E4", "E5", "E6_rd",
                                      "E6_amplification"}
  assert written["criteria"]["A2"]["passed"]
  table = written["rd"]["tables"]["fan_in"]
  assert len(table["rd_mean"]) == config.model.num_layers + 1
  assert 1 <= summary["rd"]["n_star"] <= config.model.num_layers
  runs = written["recovery"]["ft_all"]
  assert {"C0", "S_0", "B_2", "T_1", "SCARA", "SAP-like", "FullyClosed"} <= set(runs)
  assert set(written["recovery"]["ft_closed"]) == {"SCARA", f"T_{summary['rd']['n_star']}"}
  assert {"Open", "SCARA", "SAP-like"} <= set(written["customisation"])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {r["phase"] for r in rows} == {"pretrain", "rd", "recovery", "customisation"}
  reused = derive(config, values={"init_from": str(tmp_path)})
  victim, info = semi_open.build_victim(reused, str(tmp_path / "again"))
  assert info["source"] == str(tmp_path)
  assert "seconds" not in info  # reused, not pre-trained again
  assert not os.path.exists(tmp_path / "again")
  for a, b in zip(jax.tree.leaves(victim.params), jax.tree.leaves(semi_open.build_victim(
      config, str(tmp_path))[0].params)):  # a rerun keeps the finished victim
    np.testing.assert_array_equal(a, b)


def test_rd_and_n_star_of_an_imported_hugging_face_checkpoint(tmp_path):
  import torch
  import transformers

  from experiments import semi_open
  from tests import test_hf_finetune
  texts = [(tmp_path / "x").name + " def f(x):\n  return x + 1\n" * 20]
  tokenizer = test_hf_finetune._train_tokenizer(texts)
  directory = tmp_path / "gpt2"
  directory.mkdir()
  tokenizer.save(str(directory / "tokenizer.json"))
  eos = tokenizer.token_to_id(test_hf_finetune.EOS)
  torch.manual_seed(0)
  hf_config = transformers.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_embd=16,
                                      n_layer=3, n_head=2, n_positions=64, bos_token_id=eos,
                                      eos_token_id=eos)
  transformers.GPT2LMHeadModel(hf_config).save_pretrained(str(directory))
  config = semi_open_config.get_config("small")
  config.init_from = f"hf:{directory}"
  config.data.max_bytes = 30_000
  summary = semi_open.run(config, str(tmp_path / "run"))
  table = summary["rd"]["tables"]["fan_in"]
  assert len(table["rd_mean"]) == 4  # n = 0..3 for the checkpoint's 3 blocks
  assert 1 <= summary["rd"]["n_star"] <= 3
  assert "recovery" not in summary and "A5" not in summary["criteria"]
  assert summary["criteria"]["A2"]["values"]["max_abs_gap"] <= 1e-6
  assert os.path.getsize(tmp_path / "run" / "rd_curve.png") > 0
  assert not os.path.exists(tmp_path / "run" / "victim")
