"""Counting the training steps skipped for a non-finite loss or gradient, and stopping on a streak.

The train step itself leaves the parameters and the optimizer state untouched when its loss or
gradient norm is not finite (train/step.py) and reports a `finite` flag. This guard reads those
flags one step late, so that reading one never stalls the device queue: the flag of step t is
read after step t+1 has been dispatched. It stops the run with a FloatingPointError naming
`train.max_consecutive_nonfinite` once that many steps in a row were skipped. Its counters go
into every checkpoint, so a resumed run continues the same counts.
"""

from typing import Any


class NonFiniteGuard:
  """Counts skipped steps; raises after `max_consecutive` of them in a row (0: never).

  Args:
    max_consecutive: the `train.max_consecutive_nonfinite` config value.
    counters: `counters()` of an earlier run, to continue its counts.
  """

  def __init__(self, max_consecutive: int, counters: dict[str, int] | None = None):
    if max_consecutive < 0:
      raise ValueError(f"train.max_consecutive_nonfinite must be >= 0, got {max_consecutive}")
    self.max_consecutive = max_consecutive
    counters = counters or {}
    self.skipped_steps = int(counters.get("skipped_steps", 0))
    self.consecutive = int(counters.get("consecutive_nonfinite", 0))
    self._pending = None

  def push(self, step: int, finite: Any) -> None:
    """Records the flag of the step before, then holds `finite` (a device scalar) of `step`."""
    self.flush()
    self._pending = (step, finite)

  def flush(self) -> None:
    """Records the held flag now (before a checkpoint, a log line or the end of the run)."""
    if self._pending is None:
      return
    step, finite = self._pending
    self._pending = None
    if bool(finite):
      self.consecutive = 0
      return
    self.skipped_steps += 1
    self.consecutive += 1
    if self.max_consecutive and self.consecutive >= self.max_consecutive:
      raise FloatingPointError(
          f"{self.consecutive} consecutive steps up to step {step} had a non-finite loss or "
          f"gradient (their updates were skipped), which reaches "
          f"train.max_consecutive_nonfinite={self.max_consecutive}; the run stops. The last "
          "checkpoint holds the last good state: lower opt.lr, raise opt.warmup_steps or check "
          "the data, then run again.")

  def counters(self) -> dict[str, int]:
    """The counts, for metrics and checkpoints (call `flush` first)."""
    return {"skipped_steps": self.skipped_steps, "consecutive_nonfinite": self.consecutive}
