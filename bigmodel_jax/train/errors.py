"""The errors a run stops with on purpose: each message says what happened and what to do.

Experiments print such an error's message alone and exit with status 1 (experiments/cli.py); any
other exception is a bug and keeps its traceback. Each class also derives from the builtin type
that callers caught before it existed (ValueError, OSError, FloatingPointError).
"""


class RunError(Exception):
  """A failure whose message is the whole report: the key or path at fault and the way out."""


class ConfigError(RunError, ValueError):
  """A config value outside its domain, named by its key (e.g. `train.checkpoint_every`)."""


class CheckpointError(RunError, OSError):
  """The workdir cannot take, or give back, a checkpoint (unwritable, full, unreadable)."""


class IncompatibleCheckpointError(RunError, ValueError):
  """The workdir's checkpoint was written by a run of another model or optimizer."""


class NonFiniteError(RunError, FloatingPointError):
  """Too many training steps in a row had a non-finite loss or gradient."""
