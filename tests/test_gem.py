"""GEM loss: closed-form logit gradient, CE equivalence at beta=1, masking, selector, task."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax import losses
from bigmodel_jax.data.multi_answer import MultiAnswerTask


def _inputs(seed=0, shape=(3, 5), vocab=7):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(*shape, vocab)) * 2, jnp.float32)
  labels = jnp.asarray(rng.integers(0, vocab, shape), jnp.int32)
  mask = jnp.asarray(rng.random(shape) > 0.3, jnp.float32)
  return logits, labels, mask


def _closed_form(logits, labels, mask, beta, h):
  z = np.asarray(logits, np.float64)
  q = np.exp(z / beta - np.max(z / beta, -1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  z_y = np.take_along_axis(z, np.asarray(labels)[..., None], -1)
  w = np.ones_like(z) if h == "linear" else 1 / (1 + np.exp(-0.01 * (z - z_y)))
  qw = q * w
  e_y = np.eye(z.shape[-1])[np.asarray(labels)]
  return (qw - qw.sum(-1, keepdims=True) * e_y) * np.asarray(mask)[..., None]


@pytest.mark.parametrize("h", ["linear", "logsigmoid"])
@pytest.mark.parametrize("beta", [0.5, 0.7, 1.0])
def test_logit_gradient_is_closed_form(beta, h):
  logits, labels, mask = _inputs()
  grad = jax.grad(lambda z: losses.gem_loss(z, labels, mask, beta, h)[0])(logits)
  np.testing.assert_allclose(grad, _closed_form(logits, labels, mask, beta, h), atol=1e-5)


def test_beta_one_linear_is_cross_entropy_gradient():
  logits, labels, mask = _inputs(1)
  gem = jax.grad(lambda z: losses.gem_loss(z, labels, mask, beta=1.0, h="linear")[0])(logits)
  ce = jax.grad(lambda z: losses.cross_entropy(z, labels, mask)[0])(logits)
  np.testing.assert_allclose(gem, ce, atol=1e-6)


def test_masked_tokens_contribute_nothing():
  logits, labels, mask = _inputs(2)
  mask = mask.at[0].set(0.0)
  poisoned = logits.at[0].set(jnp.array([1e30, -jnp.inf, jnp.nan, 0, 0, 0, 0]))
  total, weight = losses.gem_loss(poisoned, labels, mask, 0.7, "logsigmoid")
  ref_total, ref_weight = losses.gem_loss(logits, labels, mask, 0.7, "logsigmoid")
  np.testing.assert_allclose(total, ref_total, rtol=1e-6)
  assert weight == ref_weight
  grad = jax.grad(lambda z: losses.gem_loss(z, labels, mask, 0.7)[0])(logits)
  assert np.all(np.asarray(grad[0]) == 0)


def test_selector():
  assert losses.make_token_loss("cross_entropy") is losses.cross_entropy
  logits, labels, mask = _inputs(3)
  loss = losses.make_token_loss("gem", beta=0.5, h="logsigmoid")
  np.testing.assert_allclose(loss(logits, labels, mask)[0],
                             losses.gem_loss(logits, labels, mask, 0.5, "logsigmoid")[0])
  with pytest.raises(ValueError, match="beta"):
    losses.make_token_loss("gem", beta=0.0)
  with pytest.raises(ValueError, match="unknown options"):
    losses.make_token_loss("gem", temperature=1.0)
  with pytest.raises(ValueError, match="unknown"):
    losses.make_token_loss("focal")


def test_multi_answer_task():
  task = MultiAnswerTask(num_letters=6)
  assert not set(map(tuple, task.splits["test"])) & set(map(tuple, task.splits["train"]))
  batch = task.sample_batch(np.random.default_rng(0), 32)
  assert batch["inputs"].shape == (32, task.seq_len)
  assert batch["weights"][:, :task.answer_len].sum() == 0
  seqs = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
  for seq in seqs:
    assert task.answer_index(seq[:task.answer_len], seq[task.prompt_len:]) >= 0
  prompt = np.array([0, 1, 2])
  assert task.answer_index(prompt, np.array([0, 0, 1, task.eos_id])) == -1
  assert task.answer_index(prompt, np.array([2, 1, 0, task.eos_id])) == 5


def test_gem_experiment_trains_every_loss_through_the_trainer(tmp_path):
  from bigmodel_jax.train import config_checks
  from configs import gem as gem_config
  from experiments import gem

  config = gem_config.get_config("small")
  for mode in ("full", "small"):
    config_checks.check_sections(gem_config.get_config(mode), gem.READS)
  summary = gem.run(config, str(tmp_path))
  assert list(summary["losses"]) == ["ce", "gem:0.7"]
  for name, row in summary["losses"].items():
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["best_of_n_accuracy"] <= 1
    assert np.isfinite(row["heldout_nll"]) and row["token_entropy"] > 0
    run_dir = tmp_path / name.replace(":", "_")
    with open(run_dir / "config.json") as f:
      assert json.load(f)["loss"]["name"] == ("cross_entropy" if name == "ce" else "gem")
    assert (run_dir / "checkpoints").is_dir()
  for png in ("gem_metrics.png", "gem_training.png"):
    assert (tmp_path / png).stat().st_size > 0
  assert gem.run(config, str(tmp_path))["losses"] == summary["losses"]  # finished runs are kept
