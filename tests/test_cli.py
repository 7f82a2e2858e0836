"""Every experiment's command line: `--help` names the config sections, where their keys are
documented, the optimizers and the config files; third-party INFO logging is off by default."""

import glob
import os
import subprocess
import sys

import pytest
from absl import logging

from bigmodel_jax.optim.factory import available_optimizers
from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source(path: str) -> str:
  with open(path) as f:
    return f.read()


MAINS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
               if "__main__" in _source(p) and not p.endswith("cli.py"))


def test_the_config_help_lists_sections_optimizers_and_files():
  text = cli.config_help()
  assert "top-level sections: data, distributed, loss, mesh, model, opt" in text
  assert "documented in configs/default.py" in text
  assert f"(--config.opt.name): {', '.join(available_optimizers())}" in text
  for path in glob.glob(os.path.join(ROOT, "configs", "[a-z]*.py")):
    assert f"configs/{os.path.basename(path)}" in text
  assert "configs/lomo.py [lomo]:" in text


@pytest.mark.parametrize("path", MAINS, ids=[os.path.basename(p) for p in MAINS])
def test_every_experiment_runs_through_cli(path):
  source = _source(path)
  assert "cli.run(main)" in source and "app.run(" not in source


def test_help_of_an_experiment_shows_the_config_help():
  result = subprocess.run([sys.executable, "-m", "experiments.lomo_memory", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert "Peak memory of the compiled train step" in result.stdout
  assert "documented in configs/default.py" in result.stdout and "adam_mini" in result.stdout


def test_third_party_info_logging_is_off_unless_verbosity_is_given():
  before = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.INFO)
    cli.quiet_third_party_logging()
    assert logging.get_verbosity() == logging.WARNING
  finally:
    logging.set_verbosity(before)
