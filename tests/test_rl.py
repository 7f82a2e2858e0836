"""Tests of the RL package: rewards, returns, GAE, baselines, losses, steps, gradient variance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bigmodel_jax import rl
from bigmodel_jax.data.arithmetic import ArithmeticSource, encode_prompts
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.models import create_model, from_preset
from bigmodel_jax.models.sampling import SamplingOptions
from bigmodel_jax.rl import grpo, ppo, remax, returns, rloo
from bigmodel_jax.rl.gradient_variance import gradient_estimates, total_variance
from bigmodel_jax.rl.rewards import arithmetic_reward
from bigmodel_jax.rl.rollout import Scores

CONFIG = from_preset("gpt2", vocab_size=257, num_layers=1, num_heads=2,
                     num_kv_heads=2, head_dim=8, embed_dim=16, mlp_dim=32, max_seq_len=12,
                     tie_embeddings=True)
OPTIONS = rl.RLOptions(SamplingOptions(max_new_tokens=4, eos_id=10), samples_per_prompt=2)


@functools.cache
def _policy():
  graphdef, params = nnx.split(create_model(CONFIG, nnx.Rngs(0)))
  return graphdef, nnx.to_pure_dict(params)


def _prompts(start, count):
  source = ArithmeticSource(split="train", digits=2)
  problems = [source.problem(i % len(source)) for i in range(start, start + count)]
  return jnp.asarray(encode_prompts(problems, ByteTokenizer()))


def _bytes(rows):
  return jnp.asarray([[ord(ch) for ch in row] for row in rows], jnp.int32)


def _even_token_reward(prompts, responses, mask):
  """A dense synthetic reward: the fraction of response tokens with an even id."""
  del prompts
  return ((responses % 2 == 0) & mask).sum(1) / jnp.maximum(mask.sum(1), 1)


def test_arithmetic_reward_counts_right_characters():
  prompts = _prompts(0, 1)
  source = ArithmeticSource(split="train", digits=2)
  answer = source.problem(0).answer
  wrong = str((int(answer[-1]) + 1) % 10)
  responses = _bytes([answer + "\n", answer[:-1] + wrong + "\n", answer + "7", "\n\n\n\n"])
  mask = jnp.ones(responses.shape, bool).at[3, 1:].set(False)
  reward = arithmetic_reward(2)(jnp.repeat(prompts, 4, 0), responses, mask)
  np.testing.assert_allclose(reward, [1.0, 0.75, 0.75, 0.0])
  with pytest.raises(ValueError, match="max_new_tokens"):
    arithmetic_reward(2)(prompts, responses[:1, :3], mask[:1, :3])


def test_sequence_returns_match_numpy():
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  log_ratio = np.array([[0.1, -0.2, 0.3, 9.0], [0.0, 0.5, 0.1, 0.2]], np.float32)
  advantage = np.array([1.0, -2.0], np.float32)
  beta, gamma = 0.1, 0.9
  expected = np.zeros((2, 4), np.float32)
  for i in range(2):
    length = mask[i].sum()
    for t in range(length):
      expected[i, t] = -beta * log_ratio[i, t] + gamma ** (length - 1 - t) * advantage[i]
  got = returns.sequence_returns(jnp.asarray(advantage), jnp.asarray(log_ratio),
                                 jnp.asarray(mask), kl_coef=beta, gamma=gamma)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_gae_matches_numpy_loop():
  rng = np.random.default_rng(0)
  rewards, values = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5))
  values = values.astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
  gamma, lam = 0.99, 0.95
  expected = np.zeros_like(rewards)
  for i in range(3):
    length, running = mask[i].sum(), 0.0
    for t in reversed(range(length)):
      next_value = values[i, t + 1] if t + 1 < length else 0.0
      running = rewards[i, t] + gamma * next_value - values[i, t] + gamma * lam * running
      expected[i, t] = running
  adv, ret = returns.generalized_advantages(jnp.asarray(rewards * mask), jnp.asarray(values),
                                            jnp.asarray(mask), gamma=gamma, lam=lam)
  np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, (expected + values) * mask, rtol=1e-5, atol=1e-5)


def test_baselines_match_numpy():
  r = np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.8], np.float32)
  greedy = np.array([0.5, 1.0, 0.0], np.float32)
  scores = Scores(jnp.asarray(r), jnp.asarray(greedy))
  np.testing.assert_allclose(remax.greedy_baseline_advantage(scores, 2),
                             r - np.repeat(greedy, 2))
  groups = r.reshape(3, 2)
  np.testing.assert_allclose(rloo.leave_one_out_advantage(scores, 2),
                             (groups - groups[:, ::-1]).reshape(-1), atol=1e-6)
  expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(grpo.group_normalized_advantage(scores, 2), expected.reshape(-1),
                             atol=1e-5)


def test_ppo_losses_match_numpy():
  rng = np.random.default_rng(1)
  logp, old, adv = (rng.normal(size=(2, 3)).astype(np.float32) * 0.3 for _ in range(3))
  mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
  ratio = np.exp(logp - old)
  objective = np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
  np.testing.assert_allclose(ppo.clipped_policy_loss(logp, old, adv, mask, 0.2),
                             -objective[mask].mean(), rtol=1e-5)
  values, ret = old + 0.5, adv
  clipped = old + np.clip(values - old, -0.2, 0.2)
  expected = 0.5 * np.maximum((values - ret) ** 2, (clipped - ret) ** 2)[mask].mean()
  np.testing.assert_allclose(ppo.clipped_value_loss(values, old, ret, mask, 0.2), expected,
                             rtol=1e-5)


def test_ppo_token_rewards_put_the_score_on_the_last_token():
  mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
  log_ratio = jnp.full((2, 3), 0.5)
  got = ppo.token_rewards(jnp.array([1.0, 9.0]), log_ratio, mask, kl_coef=0.2, reward_clip=5.0)
  np.testing.assert_allclose(got, [[-0.1, 0.9, 0.0], [-0.1, -0.1, 4.9]], atol=1e-6)


@pytest.mark.parametrize("name", ["remax", "ppo"])
def test_step_is_pure_and_jittable(name):
  graphdef, params = _policy()
  options = OPTIONS._replace(epochs=2) if name == "ppo" else OPTIONS
  method, state = rl.make_method(name, CONFIG, graphdef, params, optax.adam(1e-2),
                                 _even_token_reward, options)
  step = jax.jit(method.step)
  prompts, key = _prompts(0, 4), jax.random.key(0)
  new_a, metrics_a = step(state, prompts, key)
  new_b, metrics_b = step(state, prompts, key)
  jax.tree.map(np.testing.assert_array_equal, new_a, new_b)
  jax.tree.map(np.testing.assert_array_equal, metrics_a, metrics_b)
  jax.tree.map(np.testing.assert_array_equal, new_a.ref_params, params)
  assert int(new_a.step) == 1
  assert not np.allclose(new_a.params["embed"]["embedding"], params["embed"]["embedding"])
  expected = {"sampled_reward", "kl", "response_length", "loss", "grad_norm"}
  assert expected <= set(metrics_a)
  bytes_ = rl.state_bytes(state)
  assert bytes_["total"] == sum(v for k, v in bytes_.items() if k != "total")


def test_unknown_method_and_bad_group_size_are_rejected():
  graphdef, params = _policy()
  with pytest.raises(ValueError, match="rl.method"):
    rl.make_method("dpo", CONFIG, graphdef, params, optax.sgd(1.0), arithmetic_reward(2),
                   OPTIONS)
  with pytest.raises(ValueError, match="samples_per_prompt"):
    rl.make_method("rloo", CONFIG, graphdef, params, optax.sgd(1.0), arithmetic_reward(2),
                   OPTIONS._replace(samples_per_prompt=1))


def _odd_token_reward(prompts, responses, mask):
  """The fraction of response tokens with an odd id."""
  del prompts
  return ((responses % 2 == 1) & mask).sum(1) / jnp.maximum(mask.sum(1), 1)


def test_remax_gradient_is_unbiased_with_lower_variance_than_reinforce():
  graphdef, params = _policy()
  # A peaked policy, as after supervised fine-tuning: samples are mostly near the greedy
  # response (whose tokens are odd at this seed), so the greedy reward is a good baseline.
  params = {**params, "embed": {"embedding": params["embed"]["embedding"] * 20}}
  options = rl.RLOptions(SamplingOptions(max_new_tokens=4), kl_coef=0.0)
  num = 96
  prompts = jnp.stack([_prompts(4 * i, 4) for i in range(num)])
  keys = jax.random.split(jax.random.key(0), num)
  estimates = {}
  for name in ("remax", "reinforce"):
    method, state = rl.make_method(name, CONFIG, graphdef, params, optax.sgd(1.0),
                                   _odd_token_reward, options)
    estimate = jax.jit(functools.partial(gradient_estimates, method))
    estimates[name] = np.asarray(estimate(state, prompts, keys))
  # Both estimate the same expected gradient: along the direction of the mean gradient (taken
  # from the first third of the batches, independent of the rest), their means agree.
  held = num // 3
  direction = (estimates["remax"][:held] + estimates["reinforce"][:held]).mean(0)
  direction /= np.linalg.norm(direction)
  diff = (estimates["remax"][held:] - estimates["reinforce"][held:]) @ direction
  z = diff.mean() / (diff.std(ddof=1) / np.sqrt(num - held))
  assert abs(z) < 4, z
  assert total_variance(estimates["remax"]) < 0.7 * total_variance(estimates["reinforce"])


def test_method_memory_is_exact_and_abstract():
  from bigmodel_jax.rl.memory import method_memory  # pylint: disable=import-outside-toplevel
  sizes = {name: method_memory(name, CONFIG, optax.adam(1e-3), OPTIONS, batch_size=2,
                               prompt_len=7, compile_step=name == "remax")
           for name in ("remax", "ppo")}
  param_bytes = 4 * CONFIG.num_params()
  remax, ppo = sizes["remax"]["state_bytes"], sizes["ppo"]["state_bytes"]
  assert remax["params"] == remax["ref_params"] == param_bytes
  assert remax["opt_state"] == 2 * param_bytes + 4  # Adam's mu, nu and count
  assert ppo["value_params"] == param_bytes + 4 * (CONFIG.embed_dim + 1)  # + the scalar head
  assert remax["total"] / ppo["total"] < 0.6
  assert sizes["remax"]["step_peak_bytes"] > remax["total"]
