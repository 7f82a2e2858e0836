"""experiments/cli.py: one `error:` line for an override of a missing key or a bad value."""

import os
import subprocess
import sys

from experiments import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_override_of_a_missing_section_names_it_and_the_key_meant(tmp_path):
  out = _run("experiments.gem", "--config=configs/gem.py:small", f"--workdir={tmp_path}/gem",
             "--config.opt.lr=1e-3")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip() == (
      "error: --config.opt.lr: configs/gem.py:small has no key opt.lr (it has no `opt` section; "
      "its sections: gem, loss, model, task, train); did you mean --config.train.lr?")
  assert not os.path.exists(tmp_path / "gem")


def test_bad_value_is_one_error_line_before_any_work(tmp_path):
  out = _run("experiments.hessian", "--config=configs/hessian_heterogeneity.py:small",
             f"--workdir={tmp_path}/h", "--config.train.steps=0")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().startswith("error: invalid config: train.steps must be an integer "
                                       ">= 1, got 0")
  assert not os.path.exists(tmp_path / "h")


def test_missing_key_of_an_existing_section():
  message = cli.unknown_override_message(
      ["prog", "--config", "configs/gem.py:small", "--config.train.lrr=1", "--config.seed=1"])
  assert message == ("--config.train.lrr: configs/gem.py:small has no key train.lrr (its `train` "
                     "section has no such key); did you mean --config.train.lr or "
                     "--config.train.log_every?")
  argv = ["prog", "--config=configs/gem.py", "--config.seed=1"]
  assert cli.unknown_override_message(argv) is None
