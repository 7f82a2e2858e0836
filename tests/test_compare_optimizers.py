"""experiments/compare_optimizers.py end to end with the config's small settings."""

import json
import os

from figure_checks import check_saved_figures

from configs import adam_mini_vs_adamw
from experiments import compare_optimizers


def test_small_comparison_runs_every_part(tmp_path, monkeypatch):
  saved = check_saved_figures(monkeypatch, compare_optimizers)
  config = adam_mini_vs_adamw.get_config("small")
  config.compare.optimizers = ("adamw", "adam_mini")
  config.compare.state_memory_models = ("gpt2:tiny",)
  summary = compare_optimizers.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk) == {"state_memory", "step_memory", "update_time", "pretrain"}
  assert summary["state_memory"]["gpt2:tiny"]["ratio_adam_mini_over_adamw"] < 0.52
  assert summary["step_memory"]["gpt2:tiny"]["saved_bytes"] > 0
  assert summary["update_time"]["median_ratio_adam_mini_over_adamw"] > 0
  assert summary["pretrain"]["adam_mini"]["validation_curve"]
  assert json.loads((tmp_path / "config.json").read_text())["compare"]["optimizers"] == [
      "adamw", "adam_mini"]
  for png in ("validation_loss.png", "memory.png"):
    assert os.path.exists(tmp_path / png) and str(tmp_path / png) in saved, png
