"""Parses README commands with their experiments' own flags, without running them.

Run as a script (a process of its own: absl flags are global, and loading a config may define
override flags): reads a JSON list of {"module": "experiments.X", "argv": [...]} on stdin and
prints a JSON list with one error message (or null) per command. Each module runs as `__main__`
(some define their flags only there) with `app.run` replaced by the flag parsing it starts with,
which loads the config file (and `:variant`) and applies every `--config.a.b=...` override: an
unknown module, flag, config file, variant or config key is an error here, and so is a config
value outside its domain or a config section the experiment does not read.
"""

import json
import runpy
import sys

from absl import app, flags, logging  # noqa: F401  (their flags stay defined throughout)

FLAGS = flags.FLAGS


def _drop_flags_since(known: set[str]) -> None:
  """Deletes every flag defined after `known` was taken (a module's, or a parse's overrides)."""
  for name in set(FLAGS) - known:
    delattr(FLAGS, name)


def parse_command(module: str, argv: list[str]) -> str | None:
  """Parses `python -m module *argv`'s flags as `app.run` would.

  Args:
    module: the experiment module, e.g. "experiments.pretrain".
    argv: its command-line arguments.

  Returns:
    None, or the error message.
  """
  baseline = set(FLAGS)
  sys.argv = [module, *argv]  # config_flags reads its overrides from sys.argv
  FLAGS.unparse_flags()
  try:
    runpy.run_module(module, run_name="__main__")
    return None
  except Exception as e:  # any failure is the answer
    return f"{type(e).__name__}: {e}"
  finally:
    _drop_flags_since(baseline)


def _parse_only(main, argv=None, **kwargs) -> None:
  """Stands in for `app.run`: parses the flags (and validates them), checks the config as
  `experiments.cli.run` would before `main` (value domains; sections the experiment reads) and
  runs nothing."""
  del kwargs
  FLAGS(argv or sys.argv)
  check = getattr(main, "check_config", None)
  if check is not None and "config" in FLAGS and FLAGS.config is not None:
    check(FLAGS.config)


def main() -> None:
  app.run = _parse_only
  commands = json.load(sys.stdin)
  print(json.dumps([parse_command(c["module"], c["argv"]) for c in commands]))


if __name__ == "__main__":
  main()
