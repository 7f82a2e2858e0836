"""Config values outside their domain stop a run before any work, naming the key."""

import importlib
import os

import pytest

from bigmodel_jax.train import builders, config_checks
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import train_and_evaluate
from tests import test_loop


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 4-step run of test_loop's tiny config: config.json, summary.json, checkpoints."""
  root = tmp_path_factory.mktemp("finished")
  config = test_loop._config(test_loop.write_corpus(tmp_path_factory.mktemp("corpus")), root,
                             steps=4)
  train_and_evaluate(config, str(root / "run"))
  return config, str(root / "run")


def _snapshot(workdir):
  """Every file under `workdir` -> (size, mtime, contents)."""
  files = {}
  for directory, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        files[path] = (os.path.getsize(path), os.path.getmtime(path), f.read())
  return files


@pytest.mark.parametrize("override, key", [
    ({"train.steps": 0}, "train.steps"),
    ({"train.checkpoint_every": 0}, "train.checkpoint_every"),
    ({"train.log_every": 0}, "train.log_every"),
    ({"train.eval_every": -1}, "train.eval_every"),
    ({"train.eval_batches": 0}, "train.eval_batches"),
    ({"train.global_batch_size": 0}, "train.global_batch_size"),
    ({"train.grad_accum_steps": 0}, "train.grad_accum_steps"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints"),
    ({"train.max_consecutive_nonfinite": -1}, "train.max_consecutive_nonfinite"),
    ({"train.hessian_lanczos_steps": 0}, "train.hessian_lanczos_steps"),
    ({"opt.lr": -3e-3}, "opt.lr"),
    ({"opt.warmup_steps": -1}, "opt.warmup_steps"),
    ({"opt.warmup_steps": 8}, "opt.warmup_steps"),  # not below train.steps
    ({"opt.min_lr_ratio": 1.5}, "opt.min_lr_ratio"),
    ({"opt.b1": 1.0}, "opt.b1"),
    ({"opt.b2": -0.1}, "opt.b2"),
    ({"opt.eps": 0.0}, "opt.eps"),
    ({"opt.weight_decay": -0.1}, "opt.weight_decay"),
    ({"opt.fraction": 0.0}, "opt.fraction"),
    ({"data.seq_len": 64}, "data.seq_len (64) must be <= model.max_seq_len (32)"),
    ({"data.validation_fraction": 1.0}, "data.validation_fraction"),
    ({"model.num_layers": 0}, "model.num_layers"),
])
def test_bad_value_fails_before_any_work_naming_the_key(finished_run, tmp_path, monkeypatch,
                                                         override, key):
  config, workdir = finished_run
  config = config.copy_and_resolve_references()
  config.train.steps = 8  # the finished run is resumable: only the bad value stops it
  for dotted, value in override.items():
    section, name = dotted.split(".")
    config[section][name] = value
  before = _snapshot(workdir)

  def no_work(*args, **kwargs):
    raise AssertionError("the run started working before checking its config")

  monkeypatch.setattr(builders, "mesh_and_rules", no_work)
  with pytest.raises(ConfigError, match="invalid config: .*" + key.replace("(", r"\(").replace(
      ")", r"\)")):
    train_and_evaluate(config, workdir)
  assert _snapshot(workdir) == before


SHIPPED = ["default", "pretrain", "gpt2:tiny", "gpt2:124m", "gpt2:1.5b", "llama:tiny",
           "llama:1b", "llama:llama3-8b", "adam_mini_vs_adamw", "finetune_forgetting:small",
           "gem:small", "gem", "hessian_heterogeneity:small", "hessian_quadratic", "lomo",
           "measured_partition", "soak", "reward_model_arithmetic", "rlhf_arithmetic"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_passes(name):
  module, _, arg = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(*([arg] if arg else []))
  feeds = module not in ("reward_model_arithmetic", "rlhf_arithmetic", "finetune_forgetting")
  config_checks.check_config(config, data_feeds_model=feeds)


def test_every_problem_is_reported_at_once():
  config = importlib.import_module("configs.default").get_config()
  config.train.checkpoint_every, config.opt.lr = 0, -1.0
  with pytest.raises(ConfigError, match=r"train\.checkpoint_every must be an integer >= 1, "
                                        r"got 0; opt\.lr must be > 0, got -1\.0"):
    config_checks.check_config(config)
