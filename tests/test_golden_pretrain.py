"""The main job's golden figures: `make pretrain`'s config on a fresh build of the default corpus.

A change to the data (corpus, split, order), the model, the optimizer or the loss moves these
figures and fails here until they are measured again (`GOLDEN`) and the README's figure for
`make pretrain` is measured again too (`README_FIGURE`, the final validation loss of
`make pretrain` on a fresh clone).
"""

import re
import sys

import pytest

from bigmodel_jax.train import metrics
from bigmodel_jax.train.loop import train_and_evaluate
from configs import pretrain

# The default corpus is this Python's standard library: the figures hold for this version.
PYTHON = (3, 11, 7)
SPLITS = {"train": {"records": 4666, "bytes": 29_812_984},
          "validation": {"records": 1718, "bytes": 1_533_367}}
GOLDEN = {"first_train_losses": [5.3083, 5.3205, 4.9324, 4.8067, 4.6814],
          "final_eval_loss": 3.0056}
README_FIGURE = "1.94"

pytestmark = pytest.mark.skipif(
    sys.version_info[:3] != PYTHON,
    reason=f"the golden figures are for Python {PYTHON}'s standard library (the default corpus)")


def _short_config(tmp_path):
  """`make pretrain`'s config, cut to 30 steps (10 of warmup), on a fresh build of its corpus."""
  config = pretrain.get_config()
  config.data.data_dir = str(tmp_path / "tfds")  # built here: never a cached build
  config.train.update(steps=30, log_every=1, eval_every=30, checkpoint_every=30, eval_batches=4,
                      sample_tokens=0)
  config.opt.warmup_steps = 10
  return config


def test_short_run_of_the_main_job_gives_the_golden_figures(tmp_path):
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(_short_config(tmp_path), workdir)
  assert {split: {k: v for k, v in described.items() if k != "fingerprint"}
          for split, described in summary["data"].items()} == SPLITS
  losses = [row["loss"] for row in metrics.read_metrics(workdir) if "loss" in row]
  assert losses[:5] == pytest.approx(GOLDEN["first_train_losses"], rel=1e-3)
  assert summary["final_eval_loss"] == pytest.approx(
      GOLDEN["final_eval_loss"], rel=1e-3)


def test_readme_states_the_measured_figure():
  with open("README.md") as f:
    readme = f.read()
  stated = re.search(r"validation loss of ([\d.]+) nats per token", readme)
  assert stated and stated.group(1) == README_FIGURE, (
      "README.md's `make pretrain` figure differs from README_FIGURE: measure `make pretrain` on "
      "a fresh clone and update both")
