"""Metric outputs of a run: metrics.jsonl, TensorBoard events, and the live progress bar.

clu's metric writers would cover the first two, but its summary writer needs TensorFlow, which
this project does not install; tensorboardX writes the same event files without it.
"""

import json
import math
import os
from typing import Any

import numpy as np
import tqdm
from tensorboardX import SummaryWriter


def _to_python(value: Any) -> Any:
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard.

  Args:
    workdir: the run directory.
    enabled: False on every process but the first of a multi-process run.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "metrics.jsonl")
      _drop_partial_last_line(path)
      self._jsonl = open(path, "a")  # noqa: SIM115
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Writes `metrics` (scalars) for `step`."""
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _to_python(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for key, value in row.items():
      if key != "step" and isinstance(value, int | float):
        self._tensorboard.add_scalar(key, value, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tensorboard.close()


def _drop_partial_last_line(path: str) -> None:
  """Cuts a line that a killed process left half-written, so that appending stays valid JSONL."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All rows of a run's metrics.jsonl, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_bar(total_steps: int, initial_step: int, enabled: bool = True) -> tqdm.tqdm:
  """The live progress bar: step, time left (tqdm's own), and the postfix set by the loop."""
  return tqdm.tqdm(total=total_steps, initial=initial_step, disable=not enabled,
                   unit="step", dynamic_ncols=True, mininterval=1.0)
