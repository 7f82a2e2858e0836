"""What every experiment's command line shares: its `--help`, quiet third-party logging and one
clean error block instead of tracebacks.

`cli.run(main)` replaces `absl.app.run(main)`:

  - `--help` also lists the config files, the config's top-level sections (configs/default.py
    declares and documents every key of the shared ones) and the optimizer names;
  - third-party INFO logging (orbax logs every checkpoint save and restore, absl, ...) is off
    unless `--verbosity` is given;
  - a `--config.X.Y=...` override that names no key of the experiment's config stops with one
    line naming it, the config's sections and the keys it may have meant (ml_collections raises a
    bare `KeyError: "'opt'"` from its flag parser);
  - the experiment's `--config` is checked against the value domains of
    bigmodel_jax/train/config_checks.py before `main` runs;
  - a RunError of the library (bigmodel_jax/train/errors.py: a config value outside its domain,
    a checkpoint that cannot be written or resumed, a run stopped by non-finite steps) is printed
    as one `error: ...` block on stderr and the process exits with status 1. Orbax's own logged
    tracebacks of a failed background save, and the "Event loop is closed" noise of its late
    callbacks, are left out: the RunError names the cause and the last good checkpoint. Any other
    exception is a bug and keeps its traceback.
"""

import ast
import difflib
import glob
import importlib
import logging as std_logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from bigmodel_jax.train import config_checks
from bigmodel_jax.train.errors import RunError

# The top-level config keys an experiment reads, or config -> those keys, or None (unchecked).
Reads = Sequence[str] | Callable[[ml_collections.ConfigDict], Sequence[str]] | None

CONFIG_FLAG = "--config"
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def quiet_third_party_logging() -> None:
  """Logs WARNING and above only (absl, orbax, ...), unless --verbosity was given."""
  if "verbosity" in flags.FLAGS and not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _config_files() -> list[tuple[str, str]]:
  """(configs/NAME.py, the first line of its docstring) of every config file."""
  files = []
  for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    if not os.path.basename(path).startswith("_"):
      with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
      files.append((f"configs/{os.path.basename(path)}", doc.split("\n")[0]))
  return files


def _sections(name: str) -> list[str]:
  """The top-level keys of configs/NAME.py's default config."""
  return list(importlib.import_module(f"configs.{name}").get_config().keys())


def config_help() -> str:
  """The `--help` text on configs: top-level sections, optimizer names and config files."""
  from bigmodel_jax.train.optimizers import available_optimizers  # imports optax: only on demand

  shared = _sections("default")
  lines = ["", "Config: --config=configs/FILE.py[:VARIANT]; override any key with "
           "--config.SECTION.KEY=VALUE.",
           f"  top-level sections: {', '.join(shared)}: every key declared and documented in "
           "configs/default.py",
           f"  optimizers (--config.opt.name): {', '.join(available_optimizers())} "
           "(bigmodel_jax/train/optimizers.py)",
           "  config files, [their own top-level keys] (variants: in each file's docstring):"]
  for path, doc in _config_files():
    own = [k for k in _sections(os.path.basename(path)[:-3]) if k not in shared]
    lines.append(f"    {path}{' [' + ', '.join(own) + ']' if own else ''}: {doc}")
  return "\n".join(lines) + "\n"


def define_config_and_workdir(config_help: str = "Experiment config file.",
                              workdir_help: str = "Output directory.") -> None:
  """Defines the required `--config` and `--workdir` flags most experiments take.

  Experiments call it under `if __name__ == "__main__":`, so that tests (and other programs) can
  import an experiment's functions without defining its flags: absl's flags are process-global and
  a second experiment module defining `--config` would raise DuplicateFlagError.
  """
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config", "workdir"])


def run(main: Callable[[list[str]], None], data_feeds_model: bool = True,
        reads: Reads = None) -> None:
  """`app.run(main)` with the error reporting of this module and the config checked first.

  Before `main` runs, the `--config` of the experiment (if it has one) goes through
  `config_checks.check_config`, so a value outside its domain stops the run before any work,
  and, when the experiment declares `reads`, through `config_checks.check_sections`, so a
  section the experiment never reads is an error instead of being ignored.

  Args:
    main: the experiment's main(argv).
    data_feeds_model: False for experiments whose model does not run at `data.seq_len` or is not
      built from the `model` section (see `config_checks.relation_errors`).
    reads: the top-level config keys the experiment reads, or config -> those keys (an
      experiment with several config shapes, e.g. experiments.hessian's two parts).
  """
  module = sys.modules["__main__"]
  if "config" in flags.FLAGS:
    module.__doc__ = (module.__doc__ or "") + config_help()
  app.run(_reporting(main, data_feeds_model, reads), flags_parser=_parse_flags)


def fail(message: str) -> NoReturn:
  """Prints `error: message` to stderr and exits with status 1."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


def _reporting(main: Callable[[list[str]], None], data_feeds_model: bool,
               reads: Reads) -> Callable[[list[str]], None]:
  def check(config: ml_collections.ConfigDict) -> None:
    config_checks.check_config(config, data_feeds_model)
    if reads is not None:
      config_checks.check_sections(config, reads(config) if callable(reads) else reads)

  def reporting_main(argv: list[str]) -> None:
    quiet_third_party_logging()
    std_logging.getLogger("absl").addFilter(_OrbaxErrorFilter())
    std_logging.getLogger("asyncio").addFilter(_OrbaxErrorFilter())
    sys.unraisablehook = _without_closed_loop_callbacks(sys.unraisablehook)
    try:
      if "config" in flags.FLAGS and isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
        check(flags.FLAGS.config)
      main(argv)
    except RunError as e:
      fail(str(e))

  reporting_main.check_config = check  # for tests/readme_commands.py: checks without running
  return reporting_main


class _OrbaxErrorFilter(std_logging.Filter):
  """Drops the ERROR records (with tracebacks) of orbax's failed background writes: those orbax
  logs itself, and asyncio's "Task exception was never retrieved" for its write tasks (logged,
  or not, depending on when the task is garbage-collected)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno < std_logging.ERROR:
      return True
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return False
    return not (record.name == "asyncio" and "orbax" in record.getMessage())


def _without_closed_loop_callbacks(hook: Callable) -> Callable:
  """`hook` minus the "Event loop is closed" errors of orbax's callbacks after a failed write.

  When a background save fails, tensorstore still completes futures whose callbacks try to wake
  orbax's event loop, already closed; Python reports each as "Exception ignored" with a traceback.
  They are harmless (the failure itself reaches the user as a CheckpointError).
  """

  def filtered(unraisable) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      hook(unraisable)

  return filtered


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return app.parse_flags_with_usage(argv)
  except (KeyError, AttributeError):  # ml_collections: an override of a missing key
    message = unknown_override_message(argv)
    if message is None:
      raise
    fail(message)


def unknown_override_message(argv: list[str]) -> str | None:
  """Names the first `--config.KEY=...` of `argv` that the config does not have, or None.

  Args:
    argv: the command line (argv[0] is the program).

  Returns:
    E.g. "--config.opt.lr: configs/gem.py:small has no key opt.lr (it has no `opt` section; its
    sections: gem, loss, model, task, train); did you mean --config.train.lr?".
  """
  spec = _config_spec(argv)
  if spec is None:
    return None
  config = ConfigFileFlagParser(name="config").parse(spec)
  for arg in argv:
    if arg.startswith(CONFIG_FLAG + "."):
      key = arg[len(CONFIG_FLAG) + 1:].split("=", 1)[0]
      if key not in _keys(config):
        return _describe_missing(spec, config, key)
  return None


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config (`--config=PATH[:ARG]` or `--config PATH[:ARG]`), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(CONFIG_FLAG + "="):
      return arg.split("=", 1)[1]
    if arg == CONFIG_FLAG and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, bool]:
  """Every dotted key of `config` -> whether it is a section."""
  keys = {}
  for name, value in config.items():
    keys[prefix + name] = isinstance(value, ml_collections.ConfigDict)
    if keys[prefix + name]:
      keys.update(_keys(value, f"{prefix}{name}."))
  return keys


def _describe_missing(spec: str, config: ml_collections.ConfigDict, key: str) -> str:
  keys = _keys(config)
  section = key.split(".")[0]
  sections = sorted(k for k, v in config.items() if isinstance(v, ml_collections.ConfigDict))
  where = (f"it has no `{section}` section; its sections: {', '.join(sections)}"
           if section not in keys else f"its `{section}` section has no such key")
  leaf = key.split(".")[-1]
  values = sorted(k for k, is_section in keys.items() if not is_section)
  similar = [k for k in values if k.split(".")[-1] == leaf] or difflib.get_close_matches(
      key, values, n=2)
  hint = f"; did you mean {' or '.join('--config.' + k for k in similar)}?" if similar else ""
  return f"--config.{key}: {spec} has no key {key} ({where}){hint}"
