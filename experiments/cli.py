"""What every experiment's command line shares: its `--help` and quiet third-party logging.

`run(main)` stands in for `absl.app.run(main)`: `--help` then also lists the config files, the
config's top-level sections (configs/default.py declares and documents every key of the shared
ones) and the optimizer names; and third-party INFO logging (orbax logs every checkpoint save and
restore, absl, ...) is off unless `--verbosity` is given.
"""

import ast
import glob
import importlib
import os
import sys

from absl import app, flags, logging

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
  from bigmodel_jax.optim.factory import available_optimizers  # imports optax: only on demand

  shared = _sections("default")
  lines = ["", "Config: --config=configs/FILE.py[:VARIANT]; override any key with "
           "--config.SECTION.KEY=VALUE.",
           f"  top-level sections: {', '.join(shared)}: every key declared and documented in "
           "configs/default.py",
           f"  optimizers (--config.opt.name): {', '.join(available_optimizers())} "
           "(bigmodel_jax/optim/factory.py)",
           "  config files, [their own top-level keys] (variants: in each file's docstring):"]
  for path, doc in _config_files():
    own = [k for k in _sections(os.path.basename(path)[:-3]) if k not in shared]
    lines.append(f"    {path}{' [' + ', '.join(own) + ']' if own else ''}: {doc}")
  return "\n".join(lines) + "\n"


def run(main) -> None:
  """`app.run(main)` with the config help in `--help` and quiet third-party logging.

  Args:
    main: the experiment's main(argv).
  """
  module = sys.modules["__main__"]
  if "config" in flags.FLAGS:
    module.__doc__ = (module.__doc__ or "") + config_help()

  def quiet_main(argv):
    quiet_third_party_logging()
    return main(argv)

  app.run(quiet_main)
