"""Fine-tuning: the arithmetic domain, the L2-towards-init baseline, restoring a pretrain
checkpoint, and the comparison (experiments.finetune) end to end from a tiny one."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax.data import ByteTokenizer, arithmetic, make_lm_dataset
from bigmodel_jax.optim.l2sp import add_l2_towards_init
from bigmodel_jax.train import builders
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import train_and_evaluate
from bigmodel_jax.train.optimizers import available_optimizers
from bigmodel_jax.train.pretrained import restore_checkpoint
from configs import default, finetune_forgetting
from experiments import finetune, forgetting_report


def test_arithmetic_splits_are_disjoint_and_complete():
  train = arithmetic.ArithmeticSource(split="train", digits=2)
  validation = arithmetic.ArithmeticSource(split="validation", digits=2)
  pairs = {tuple(p) for p in train.pairs} | {tuple(p) for p in validation.pairs}
  assert len(train) + len(validation) == len(pairs) == 10_000
  text = train[0]["text"]
  a, b = int(text[:2]), int(text[3:5])
  assert text == f"{a:02d}+{b:02d}={a + b:03d}\n"
  batch = next(make_lm_dataset(source=train, tokenizer=ByteTokenizer(), split="train",
                               seq_len=16, global_batch_size=2, seed=0))
  assert batch["inputs"].shape == (2, 16)


def test_reversed_answers():
  assert arithmetic.problem(7, 35, 2, reverse_answer=True).answer == "240"
  train = arithmetic.ArithmeticSource(split="train", digits=2, reverse_answer=True)
  plain = arithmetic.ArithmeticSource(split="train", digits=2)
  assert train.fingerprint != plain.fingerprint
  assert train[0]["text"] == plain[0]["text"][:6] + plain[0]["text"][6:9][::-1] + "\n"


def test_completion_only_loss_weighs_exactly_the_answer_tokens():
  source = arithmetic.ArithmeticSource(split="train", digits=2, reverse_answer=True)
  tokenizer = ByteTokenizer()
  batch = next(make_lm_dataset(source=source, tokenizer=tokenizer, split="validation",
                               seq_len=40, global_batch_size=2, seed=0,
                               completion_only_loss=True))
  # A document is 11 tokens: prompt "07+35=" (6), answer "240", "\n", EOS.
  row = np.concatenate([batch["inputs"][0], batch["targets"][0][-1:]])
  documents = np.concatenate([np.append(tokenizer.encode(source[i]["text"]), tokenizer.eos_id)
                              for i in range(4)])
  np.testing.assert_array_equal(row, documents[:41])
  # Target j is row token j + 1: it weighs 1 where that token is answer, "\n" or EOS.
  position_in_document = np.arange(1, 41) % 11
  expected = position_in_document >= 6
  np.testing.assert_array_equal(batch["weights"][0], expected.astype(np.float32))
  with pytest.raises(KeyError, match="prompt"):
    next(make_lm_dataset(source=[{"text": "x"}], tokenizer=tokenizer, split="validation",
                         seq_len=8, global_batch_size=1, seed=0, completion_only_loss=True))


def test_one_problem_per_row_starts_at_position_zero():
  source = arithmetic.ArithmeticSource(split="train", digits=2, reverse_answer=True)
  tokenizer = ByteTokenizer()
  batch = next(make_lm_dataset(source=source, tokenizer=tokenizer, split="validation",
                               seq_len=16, global_batch_size=3, seed=0,
                               completion_only_loss=True, pack_documents=False))
  for i in range(3):
    document = np.concatenate([[tokenizer.eos_id], tokenizer.encode(source[i]["text"]),
                               [tokenizer.eos_id]])  # 12 tokens
    np.testing.assert_array_equal(batch["inputs"][i][:11], document[:11])
    np.testing.assert_array_equal(batch["targets"][i][:11], document[1:])
    # Weighted: answer (3), "\n", EOS; the prompt's 6 targets and the 5 padding ones are not.
    np.testing.assert_array_equal(batch["weights"][i], [0] * 6 + [1] * 5 + [0] * 5)
  with pytest.raises(ValueError, match="seq_len=8"):
    next(make_lm_dataset(source=source, tokenizer=tokenizer, split="validation", seq_len=8,
                         global_batch_size=1, seed=0, pack_documents=False))


def test_best_run_and_target_checks():
  def run(method, lr, accuracy, forgetting):
    return {"method": method, "lr": lr, "ft_accuracy": accuracy, "forgetting": forgetting,
            "ft_loss": 0.0}

  runs = [run("adamw", 1e-3, 1.0, 4.0), run("adamw", 3e-3, 1.0, 12.0),
          run("mofo@0.1", 1e-3, 0.99, 1.0), run("mofo@0.1", 3e-3, 0.5, 0.1)]
  best = forgetting_report.best_per_method(runs)
  assert best["adamw"]["lr"] == 1e-3  # equal accuracy: the run that forgets less
  assert best["mofo@0.1"]["lr"] == 1e-3  # higher accuracy first
  check = forgetting_report.target_check(best, "mofo@0.1", "adamw")
  assert check["met"] and check["forgetting_ratio"] == 0.25
  assert abs(check["accuracy_gap_points"] - 1.0) < 1e-9
  per_lr = forgetting_report.target_check_per_lr(runs, "mofo@0.1", "adamw")
  assert set(per_lr) == {"0.001", "0.003"} and not per_lr["0.003"]["met"]


def test_l2_towards_init_adds_the_pull():
  params = {"w": jnp.asarray([1.0, 2.0])}
  transform = add_l2_towards_init(0.5)
  state = transform.init(params)
  moved = {"w": jnp.asarray([3.0, 2.0])}
  updates, _ = transform.update({"w": jnp.zeros(2)}, state, moved)
  np.testing.assert_allclose(updates["w"], [1.0, 0.0])
  assert {"mofo", "adamw_l2sp"} <= set(available_optimizers())


def test_parse_method():
  assert finetune.parse_method("mofo@0.15") == ("mofo", {"fraction": 0.15})
  assert finetune.parse_method("adamw") == ("adamw", {})
  with pytest.raises(ConfigError, match="methods"):
    finetune.parse_method("adamw@0.1")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrain")
  corpus = root / "corpus"
  corpus.mkdir()
  rng = np.random.default_rng(0)
  for i in range(10):
    (corpus / f"doc_{i}.py").write_text(" ".join(rng.choice(["def", "x", "=", "1+2"], 200)))
  config = default.get_config()
  config.model.update(num_layers=1, num_heads=2, num_kv_heads=2, head_dim=8, embed_dim=16,
                      mlp_dim=32, max_seq_len=32)
  config.data.update(text_globs=(str(corpus / "*.py"),), seq_len=32,
                     data_dir=str(root / "tfds"), validation_fraction=0.2)
  config.train.update(steps=2, global_batch_size=8, log_every=1, eval_every=2, eval_batches=1,
                      checkpoint_every=2)
  config.opt.warmup_steps = 1
  workdir = str(root / "run")
  train_and_evaluate(config, workdir)
  return config, workdir


def test_finetune_comparison_end_to_end(pretrained, tmp_path):
  pretrain_config, init_from = pretrained
  config = finetune_forgetting.get_config("small")
  config.init_from = init_from
  config.data = pretrain_config.data
  summary = finetune.run_comparison(config, str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "summary.json", "forgetting_vs_accuracy.png"):
    assert os.path.exists(tmp_path / name), name
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["target"]["method"] == "mofo@0.1"
  runs = {run["method"]: run for run in summary["runs"]}
  assert set(runs) == {"adamw", "mofo@0.1", "adamw_l2sp@1.0"}
  # MoFO moves a small fraction of the entries, AdamW nearly all (no weight decay here).
  assert runs["mofo@0.1"]["fraction_changed"] < 0.5 < runs["adamw"]["fraction_changed"]
  assert summary["pretrained"]["l2_distance"] == 0.0
  # Every run is a trainer run of its own; a rerun keeps a finished one.
  run_dir = finetune.run_dir(str(tmp_path), "mofo@0.1", 1e-3)
  assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
  with open(os.path.join(run_dir, "summary.json")) as f:
    assert json.load(f)["final_metrics"]["ft_accuracy"] == runs["mofo@0.1"]["ft_accuracy"]
  assert finetune.run_comparison(config, str(tmp_path))["runs"] == summary["runs"]


def test_restored_params_equal_the_checkpoint(pretrained):
  _, init_from = pretrained
  mesh, rules = builders.mesh_and_rules(default.get_config())
  _, _, params, step = restore_checkpoint(init_from, mesh, rules)
  assert step == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert optax.tree.norm(params) > 0
  _, _, chosen, _ = restore_checkpoint(init_from, mesh, rules, step=2)
  jax.tree.map(np.testing.assert_array_equal, chosen, params)
  with pytest.raises(ValueError, match=r"init_step=1: no such checkpoint .*\[2\]"):
    restore_checkpoint(init_from, mesh, rules, step=1)
