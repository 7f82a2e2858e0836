"""Skipped (non-finite) steps, the streak that stops a run, and which states are fit to checkpoint.

The train step itself leaves the parameters and the optimizer state untouched when its loss or
gradient norm is not finite (train/step.py) and reports a `finite` flag. This guard reads those
flags, with the step's loss, update norm and parameter norm, one step late, so that reading them
never stalls the device queue: the metrics of step t are read after step t+1 has been dispatched.
It stops the run with a NonFiniteError naming `train.max_consecutive_nonfinite` once that many
steps in a row were skipped.

It also judges whether the state after step t is *healthy*, i.e. fit to be checkpointed: each of
the last `window` steps up to t (the loop passes `train.log_every`)

  - was not skipped (its loss and gradient were finite),
  - had a loss no higher than max(DIVERGENCE_RATIO x the lowest loss of the run so far, the run's
    first loss): a loss above both is diverging (for a loss that can be negative, such as GEM's,
    this is "above the first loss"),
  - and moved the parameters by less than their own norm (update norm < the parameter norm before
    the step; the loss of step t is measured before its update, so this catches a blow-up in the
    last step itself).

Its counters go into every checkpoint (with the run's first and lowest loss), so a resumed run
continues the same counts and the same divergence test. A checkpoint is only written from a healthy
state, so its streak count is 0: a rerun resumes with a fresh streak.
"""

from typing import Any

import jax

from bigmodel_jax.train.errors import NonFiniteError

DIVERGENCE_RATIO = 2.0


class NonFiniteGuard:
  """Counts skipped steps, raises after `max_consecutive` of them in a row (0: never), and says
  whether the latest state is healthy (see the module docstring).

  Args:
    max_consecutive: the `train.max_consecutive_nonfinite` config value.
    counters: `resume_counters()` of an earlier run, to continue its counts.
    window: the number of recent steps that must be sound for a state to be healthy.
  """

  def __init__(self, max_consecutive: int, counters: dict[str, Any] | None = None,
               window: int = 1):
    if max_consecutive < 0:
      raise ValueError(f"train.max_consecutive_nonfinite must be >= 0, got {max_consecutive}")
    self.max_consecutive = max_consecutive
    self.window = window
    counters = counters or {}
    self.skipped_steps = int(counters.get("skipped_steps", 0))
    self.consecutive = int(counters.get("consecutive_nonfinite", 0))
    self.first_loss = counters.get("first_loss")
    self.min_loss = counters.get("min_loss")
    self._pending = None
    self._param_norm = None  # of the state after the latest recorded step
    self._unsound = None  # (step, reason) of the latest step that was skipped or unsound

  def push(self, step: int, finite: Any, metrics: dict[str, Any] | None = None) -> None:
    """Records the step before, then holds `finite` and `metrics` (device scalars) of `step`.

    Args:
      step: the step number (1 after the first step).
      finite: the step's `finite` flag.
      metrics: the step's metrics with loss, update_norm and param_norm (None: only counting).
    """
    self.flush()
    sound = {k: metrics[k] for k in ("loss", "update_norm", "param_norm")} if metrics else {}
    self._pending = (step, finite, sound)

  def flush(self) -> None:
    """Records the held step now (before a checkpoint, a log line or the end of the run)."""
    if self._pending is None:
      return
    step, finite, values = self._pending
    self._pending = None
    finite, values = jax.device_get((finite, values))
    if bool(finite):
      self.consecutive = 0
      self._judge(step, {k: float(v) for k, v in values.items()})
      return
    self.skipped_steps += 1
    self.consecutive += 1
    self._unsound = (step, "its loss or gradient was not finite (skipped)")
    if self.max_consecutive and self.consecutive >= self.max_consecutive:
      raise NonFiniteError(
          f"{self.consecutive} consecutive steps up to step {step} had a non-finite loss or "
          f"gradient (their updates were skipped), which reaches "
          f"train.max_consecutive_nonfinite={self.max_consecutive}; the run stops.")

  def _judge(self, step: int, values: dict[str, float]) -> None:
    """Records whether the finite step `step` was sound (its loss, its update's size)."""
    if not values:
      return
    loss, reason = values["loss"], None
    if self.first_loss is None:
      self.first_loss = self.min_loss = loss
    limit = max(DIVERGENCE_RATIO * self.min_loss, self.first_loss)
    if loss > limit:
      reason = (f"its loss {loss:.4g} is above {DIVERGENCE_RATIO:g} x the lowest loss "
                f"{self.min_loss:.4g} and above the first loss {self.first_loss:.4g} (diverging)")
    elif self._param_norm is not None and values["update_norm"] >= self._param_norm:
      reason = (f"its update's norm {values['update_norm']:.4g} is not below the norm "
                f"{self._param_norm:.4g} of the parameters it changed (blown up)")
    self.min_loss = min(self.min_loss, loss)
    self._param_norm = values["param_norm"]
    if reason:
      self._unsound = (step, reason)

  def unhealthy(self, step: int) -> str | None:
    """Why the state after `step` is not fit to checkpoint, or None when it is (call `flush`)."""
    if self._unsound is None or self._unsound[0] <= step - self.window:
      return None
    return (f"step {self._unsound[0]}, one of the last {self.window} (train.log_every), was "
            f"unsound: {self._unsound[1]}")

  def counters(self) -> dict[str, int]:
    """The counts, for metrics (call `flush` first)."""
    return {"skipped_steps": self.skipped_steps, "consecutive_nonfinite": self.consecutive}

  def resume_counters(self) -> dict[str, Any]:
    """The counts and the run's first and lowest loss, for checkpoints (call `flush` first)."""
    return {**self.counters(), "first_loss": self.first_loss, "min_loss": self.min_loss}
