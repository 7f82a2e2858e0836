"""End-to-end test of experiments.rlhf on its small config."""

import json
import os
import shutil

import pytest

from bigmodel_jax.train import config_checks, metrics
from bigmodel_jax.train.errors import ConfigError
from configs import default, reward_model_arithmetic, rlhf_arithmetic
from experiments import reward_model, rlhf


def test_small_rlhf_run_and_the_rl_phase_with_the_configs_optimizer(tmp_path):
  config = rlhf_arithmetic.get_config("small")
  workdir = str(tmp_path / "adamw")
  summary = rlhf.run(config, workdir)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  for name in ("remax", "ppo"):
    entry = summary["methods"][name]
    assert 0 <= entry["final_greedy_reward"] <= 1 and 0 <= entry["final_sampled_reward"] <= 1
    assert entry["state_bytes"] > 0 and entry["step_time_s"] > 0 and entry["step_peak_bytes"] > 0
  # ReMax keeps policy + Adam moments + reference; PPO adds a value model with its moments.
  ratio = summary["targets"]["state_bytes_ratio_remax_over_ppo"]
  assert 0.5 < ratio < 0.6
  assert set(summary["gradient_variance"]) == {"remax"}
  assert summary["sft"]["rl_start_step"] == 5 and summary["sft"]["final_eval_loss"] > 0
  for name in ("sft", "remax", "ppo"):  # every phase's own run directory
    assert os.path.exists(os.path.join(workdir, name, "metrics.jsonl"))
  for name in ("remax", "ppo"):
    rows = metrics.read_metrics(os.path.join(workdir, name))
    assert [r["step"] for r in rows if "sampled_reward" in r] == [1, 2]
    assert [r["step"] for r in rows if "eval_greedy_reward" in r] == [1, 2]
    assert all(r["loss"] >= 0 for r in rows if "sampled_reward" in r)  # the reward shortfall
    assert set(summary["methods"][name]["phase_time_s"]) == set(rlhf.PHASES)
  assert os.path.exists(os.path.join(workdir, "remax", "checkpoints", "2"))  # the trainer's
  for png in ("rlhf_curves.png", "rlhf_cost.png"):
    assert os.path.getsize(os.path.join(workdir, png)) > 0

  # The RL phase's optimizer is the config's: MoFO from the same SFT start (the finished SFT run
  # is copied, so the trainer keeps it instead of training it again).
  config.opt.update(name="mofo", fraction=0.1)
  config.rl.update(methods=("remax",), variance_batches=0, time_repeats=0)  # no costs
  shutil.copytree(os.path.join(workdir, "sft"), str(tmp_path / "mofo" / "sft"))
  mofo_summary = rlhf.run(config, str(tmp_path / "mofo"))
  assert mofo_summary["optimizer"] == "mofo" and mofo_summary["sft"] == summary["sft"]
  adam, mofo = (s["methods"]["remax"]["fraction_params_changed"]
                for s in (summary, mofo_summary))
  assert adam > 0.9  # Adam moves (almost) every weight
  assert 0 < mofo <= 0.1 * 2 + 0.01  # MoFO: at most 10% of each block per step, 2 steps


@pytest.mark.parametrize("module, experiment", [(rlhf_arithmetic, rlhf),
                                                (reward_model_arithmetic, reward_model)])
def test_the_config_holds_only_what_the_experiment_reads(module, experiment):
  for mode in ("", "small"):
    config_checks.check_sections(module.get_config(mode), experiment.READS)
  with pytest.raises(ConfigError, match="'data' is read by no code of this experiment"):
    config_checks.check_sections(default.get_config(), experiment.READS)
