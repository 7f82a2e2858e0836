"""Configs derived from an experiment's config: one run's config within a sweep or comparison.

Every experiment that runs the trainer several times (one run per optimizer, loss, learning rate
or method) hands it a copy of its own config without the sections only the experiment reads and
with a few values set; this is the one way such copies are made, so each keeps the original's
types (a value of the wrong type is refused) and leaves the original untouched.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections


def derive(config: ml_collections.ConfigDict, drop: Iterable[str] = (),
           values: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """A copy of `config` without the sections `drop`, with dotted keys set to `values`.

  Args:
    config: the experiment config (possibly locked; it is not changed).
    drop: top-level keys to leave out (e.g. the experiment's own section).
    values: {"opt.lr": 1e-3, "loss.name": "gem", ...}; each key must exist and keep its type.

  Returns:
    The derived config.

  Raises:
    KeyError: naming a dropped section that `config` does not have, or a key of `values` that
      it does not have.
  """
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    for key in drop:
      if key not in copy:
        raise KeyError(f"the config has no section {key!r} to leave out")
      del copy[key]
  for key, value in (values or {}).items():
    section, _, leaf = key.rpartition(".")
    parent = copy
    for part in section.split(".") if section else ():
      if part not in parent:
        raise KeyError(f"the config has no key {key!r}")
      parent = parent[part]
    if leaf not in parent:
      raise KeyError(f"the config has no key {key!r}")
    parent[leaf] = value
  return copy
