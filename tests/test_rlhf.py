"""End-to-end test of experiments.rlhf on its small config."""

import json
import os

from configs import rlhf_arithmetic
from experiments import rlhf


def test_small_rlhf_run_writes_summary_metrics_and_plots(tmp_path):
  workdir = str(tmp_path)
  summary = rlhf.run(rlhf_arithmetic.get_config("small"), workdir)
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
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["method"] for r in rows] == ["remax", "remax", "ppo", "ppo"]
  assert all("time_generation_s" in r and "eval_greedy_reward" in r for r in rows)
  for png in ("rlhf_curves.png", "rlhf_cost.png"):
    assert os.path.getsize(os.path.join(workdir, png)) > 0
