"""Every experiment's command line (experiments/cli.py): `--help` names the config sections, where
their keys are documented, the optimizers and the config files; third-party INFO logging is off by
default; one `error:` line for an override of a missing key or a bad value."""

import glob
import logging as std_logging
import os
import subprocess
import sys

import pytest
from absl import logging

from bigmodel_jax.train.optimizers import available_optimizers
from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


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
  assert "cli.run(main" in source and "app.run(" not in source


def test_experiments_define_no_flags_when_imported():
  """Tests import several experiments into one process: none may define a flag at import time
  (absl's flags are global; a second `--config` raises DuplicateFlagError)."""
  modules = [f"experiments.{os.path.basename(p)[:-3]}" for p in MAINS]
  program = ("import importlib\nfrom absl import flags\n"
             f"for name in {modules!r}:\n  importlib.import_module(name)\n"
             "print(sorted(m for m in flags.FLAGS.flags_by_module_dict() if 'experiments' in m),"
             " 'config' in flags.FLAGS, 'workdir' in flags.FLAGS)")
  result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "[] False False"


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


def test_override_of_a_missing_section_names_it_and_the_key_meant(tmp_path):
  out = _run("experiments.gem", "--config=configs/gem.py:small", f"--workdir={tmp_path}/gem",
             "--config.data.seq_len=8")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip() == (
      "error: --config.data.seq_len: configs/gem.py:small has no key data.seq_len (it has no "
      "`data` section; its sections: gem, loss, mesh, model, opt, task, train); did you mean "
      "--config.model.max_seq_len?")
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
      ["prog", "--config", "configs/gem.py:small", "--config.opt.lrr=1", "--config.seed=1"])
  assert message == ("--config.opt.lrr: configs/gem.py:small has no key opt.lrr (its `opt` "
                     "section has no such key); did you mean --config.opt.lr or "
                     "--config.opt.l2sp?")
  argv = ["prog", "--config=configs/gem.py", "--config.seed=1"]
  assert cli.unknown_override_message(argv) is None


def test_orbax_write_failures_are_not_logged_again_by_asyncio():
  """A failed background write reaches the user as one CheckpointError; orbax's own records and
  asyncio's "Task exception was never retrieved" for its write tasks are dropped, others kept."""
  orbax_filter = cli._OrbaxErrorFilter()  # pylint: disable=protected-access

  def record(name, message, path="/lib/python3.11/asyncio/base_events.py"):
    return std_logging.LogRecord(name, std_logging.ERROR, path, 1, message, None, None)

  unretrieved = "Task exception was never retrieved\nfuture: <Task coro=<{}() defined at {}>>"
  assert not orbax_filter.filter(record(
      "asyncio", unretrieved.format("async_serialize_from_host", "/site/orbax/checkpoint/s.py")))
  assert orbax_filter.filter(record("asyncio", unretrieved.format("fetch", "/site/app/io.py")))
  assert not orbax_filter.filter(record("absl", "write failed", "/site/orbax/checkpoint/a.py"))
  assert orbax_filter.filter(record("absl", "a real error", "/site/app/main.py"))
