"""experiments/hessian.py end to end with the configs' small settings."""

import json
import os

import numpy as np
from figure_checks import check_saved_figures

from configs import hessian_heterogeneity, hessian_quadratic
from experiments import hessian as experiment


def test_small_heterogeneity_writes_every_output(tmp_path, monkeypatch):
  saved = check_saved_figures(monkeypatch, experiment)
  config = hessian_heterogeneity.get_config("small")
  config.models = ("gpt", "cnn")
  summary = experiment.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk["table"]) == {"gpt", "cnn"}
  for label in ("gpt", "cnn"):
    js0 = summary["spectra"][label]["js0"]
    assert 0 <= js0["bounded"] <= np.sqrt(np.log(2))
    assert js0["paper"] >= js0["bounded"]
    assert {"lo", "hi", "dx", "sigma2"} <= set(summary["spectra"][label]["grid"])
    assert np.isfinite(summary["training"][label]["gap_eval_loss_sgd_minus_adamw"])
    for png in (f"spectra_{label}.png", f"js_{label}.png"):
      assert os.path.exists(tmp_path / png), png
  assert summary["speed"]["hvp_over_grad"] > 0
  assert "embed/embedding" in summary["spectra"]["gpt"]["blocks"]
  assert (tmp_path / "metrics.jsonl").read_text().strip()
  assert os.path.exists(tmp_path / "training.png") and len(saved) >= 5


def test_small_quadratic_counts_iterations(tmp_path, monkeypatch):
  saved = check_saved_figures(monkeypatch, experiment)
  config = hessian_quadratic.get_config("small")
  summary = experiment.run(config, str(tmp_path))
  for case in ("heterogeneous", "homogeneous"):
    assert summary[case]["condition_number"] == np.float64(summary[case]["condition_number"])
    np.testing.assert_allclose(summary[case]["condition_number"], config.kappa, rtol=1e-6)
    for method in ("gd", "adam", "adam_mini"):
      assert method in summary[case]
  assert os.path.exists(tmp_path / "quadratic.png") and saved


def test_a_run_that_never_reaches_the_target_says_so():
  assert experiment._iterations_text(None, 200) == "not in 200 it"
  assert experiment._iterations_text(40, 200) == "40 it"


def test_each_config_holds_what_its_experiment_reads():
  from bigmodel_jax.train import config_checks
  from configs import measured_partition as measured_config
  from experiments import measured_partition

  for config in (hessian_heterogeneity.get_config(), hessian_heterogeneity.get_config("small"),
                 hessian_quadratic.get_config()):
    config_checks.check_sections(config, experiment.reads(config))
  for mode in ("full", "small"):
    config_checks.check_sections(measured_config.get_config(mode), measured_partition.READS)
