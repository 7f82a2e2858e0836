"""The files every run writes into its workdir: config.json and summary.json (DESIGN.md).

Both are written atomically (a temporary file in the same directory, then `os.replace`), so a
run killed mid-write leaves the previous file or none, never half a JSON document.
"""

import importlib.metadata
import json
import os
import platform
import tempfile

import ml_collections


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON to `path`, atomically.

  Args:
    path: the file to (re)write; its directory must exist.
    value: anything `json.dump` accepts.
  """
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
    try:
      json.dump(value, f, indent=2)
      f.write("\n")
    except BaseException:
      os.remove(f.name)
      raise
  os.replace(f.name, path)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates `workdir` and writes the run's whole config to workdir/config.json.

  Args:
    config: the experiment config.
    workdir: the run's output directory.
  """
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))


def read_summary(workdir: str) -> dict | None:
  """The run's workdir/summary.json, or None when there is none (or it is not readable JSON)."""
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_summary(summary: dict, workdir: str) -> None:
  """Writes the run's figures to workdir/summary.json.

  Args:
    summary: the summary dict.
    workdir: the run's output directory (exists).
  """
  write_json(os.path.join(workdir, "summary.json"), summary)


# The packages whose versions can change a run's figures.
_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
                       "tensorflow-datasets", "numpy", "bigmodel_jax")


def package_versions() -> dict[str, str | None]:
  """The Python version and the installed versions of the packages a run's figures depend on.

  Returns:
    {"python": "3.11.7", "jax": ..., ...}; None for a package that is not installed.
  """
  versions = {"python": platform.python_version()}
  for name in _VERSIONED_PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions
