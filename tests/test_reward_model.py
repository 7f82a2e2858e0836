"""Tests of the Bradley-Terry reward model and its experiment."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from figure_checks import check_saved_figures
from flax import nnx

from bigmodel_jax.data.arithmetic import ArithmeticSource
from bigmodel_jax.data.array_batches import RandomBatches, padded_batches
from bigmodel_jax.models import from_preset
from bigmodel_jax.rl.reward_model import (
  bradley_terry_loss,
  learned_reward,
  preference_pairs,
  sequence_scores,
)
from bigmodel_jax.rl.rewards import arithmetic_reward
from bigmodel_jax.rl.value_model import ValueModel
from configs import reward_model_arithmetic
from experiments import reward_model

CONFIG = from_preset("gpt2", vocab_size=257, num_layers=1, num_heads=2,
                     num_kv_heads=2, head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=12,
                     tie_embeddings=True)


def test_pairs_are_ordered_by_the_programmatic_reward():
  pairs = preference_pairs(ArithmeticSource(split="train"), 200, seed=0)
  assert 0 < len(pairs.prompts) <= 200
  mask = jnp.ones(pairs.chosen.shape, bool)
  reward = arithmetic_reward(2)
  chosen, rejected = (np.asarray(reward(pairs.prompts, y, mask))
                      for y in (pairs.chosen, pairs.rejected))
  assert (chosen > rejected).all()


def test_scores_read_the_last_unmasked_token_and_loss_matches_formula():
  model = ValueModel(CONFIG, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
  pairs = preference_pairs(ArithmeticSource(split="train"), 8, seed=1)
  mask = jnp.ones(pairs.chosen.shape, bool).at[0, 2:].set(False)
  scores = sequence_scores(graphdef, params, pairs.prompts, pairs.chosen, mask)
  values = nnx.merge(graphdef, params)(jnp.concatenate([pairs.prompts, pairs.chosen], 1))
  p = pairs.prompts.shape[1]
  np.testing.assert_allclose(scores[0], values[0, p + 1], rtol=1e-6)
  np.testing.assert_allclose(scores[1:], values[1:, -1], rtol=1e-6)
  full = jnp.ones(pairs.chosen.shape, bool)
  margin = np.asarray(learned_reward(graphdef, params)(pairs.prompts, pairs.chosen, full)
                      - learned_reward(graphdef, params)(pairs.prompts, pairs.rejected, full))
  loss, accuracy = bradley_terry_loss(graphdef, params, pairs)
  np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-margin))), rtol=1e-5)
  np.testing.assert_allclose(accuracy, np.mean(margin > 0))


def test_small_reward_model_experiment(tmp_path, monkeypatch):
  saved = check_saved_figures(monkeypatch, reward_model)
  summary = reward_model.run(reward_model_arithmetic.get_config("small"), str(tmp_path))
  assert 0 <= summary["heldout_pair_accuracy"] <= 1
  with open(os.path.join(tmp_path, "summary.json")) as f:
    assert json.load(f) == summary
  assert saved
  assert os.path.getsize(os.path.join(tmp_path, "reward_model.png")) > 0
  with pytest.raises(ValueError, match="unknown mode"):
    reward_model_arithmetic.get_config("huge")


def test_random_batches_resume_and_padded_batches_cover_every_row():
  arrays = {"x": np.arange(10), "weight": np.ones(10, np.float32)}
  batches = RandomBatches(arrays, 4, seed=3)
  first = [next(batches) for _ in range(3)]
  resumed = RandomBatches(arrays, 4, seed=3)
  resumed.set_state(json.loads(json.dumps({"step": 2})))
  np.testing.assert_array_equal(next(resumed)["x"], first[2]["x"])
  padded = padded_batches(arrays, 4)
  assert [len(b["x"]) for b in padded] == [4, 4, 4]
  np.testing.assert_array_equal(np.concatenate([b["x"] for b in padded])[:10], arrays["x"])
  assert np.concatenate([b["weight"] for b in padded]).sum() == 10
