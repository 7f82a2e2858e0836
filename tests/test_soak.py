"""The soak in miniature: two SIGKILLs and one SIGTERM, then a bit-identical finish."""

import json
import os

from configs import soak as soak_config
from experiments import soak
from tests import test_loop


def test_soak_survives_kills_and_a_preemption_bit_identically(tmp_path):
  (tmp_path / "corpus").mkdir()
  corpus = test_loop.write_corpus(tmp_path / "corpus")
  config = soak_config.get_config("small")
  config.data.update(text_globs=(str(corpus / "*.py"),), data_dir=str(tmp_path / "tfds"),
                     validation_fraction=0.2)
  workdir = str(tmp_path / "soak")
  summary = soak.run(config, workdir)
  assert summary["kills_survived"] == 2 and summary["sigterms_survived"] == 1
  assert summary["sigterm_exit_codes_ok"]
  assert summary["bit_identical"]
  assert summary["corrupt_checkpoints_found"] == []
  assert summary["checkpoints_left_and_verified"][-1] == config.train.steps
  # An asynchronous save still being written when the kill lands is lost with its step range.
  assert all(0 <= lost < 2 * config.train.checkpoint_every
             for lost in summary["steps_lost_per_kill"])
  assert all(lost <= 0 for lost in summary["steps_lost_per_sigterm"])  # SIGTERM saves first
  for name in ("metrics.jsonl", "soak.png", "summary.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert len([json.loads(line) for line in f]) == 3
