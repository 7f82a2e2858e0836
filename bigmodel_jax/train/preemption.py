"""Preemption: on SIGTERM, save a checkpoint at the next step boundary and stop.

Cluster schedulers (SLURM, Kubernetes, Cloud TPU maintenance) announce an eviction with SIGTERM
and kill the process a grace period later. In a single-process run a Python signal handler sets
a flag that the loop reads at every step boundary. In a multi-process run JAX's own preemption
service (started by `jax.distributed.initialize`) catches SIGTERM on any process and agrees with
the others on one step at which all of them save (`multihost_utils.reached_preemption_sync_point`),
since a checkpoint is a collective write; a Python handler would displace it.

The loop then raises `Preempted`; experiments exit with PREEMPTED_EXIT_CODE (143 = 128 + SIGTERM,
what a shell reports for a process ended by SIGTERM), and the same command resumes.
"""

import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


class Preempted(Exception):
  """The run stopped at `step` after a SIGTERM, once that step's checkpoint was saved.

  Args:
    step: the step the run stopped at.
    directory: the checkpoints directory.
    saved: False when the state of `step` was not healthy and so not checkpointed (the run then
      resumes from the last healthy checkpoint).
  """

  def __init__(self, step: int, directory: str, saved: bool = True):
    what = (f"saved the checkpoint of step {step} in {directory}" if saved else
            f"the state of step {step} was not healthy and is not checkpointed")
    super().__init__(f"preempted (SIGTERM): {what}; run the same command again to resume"
                     + ("" if saved else f" from the last healthy checkpoint in {directory}"))
    self.step = step


class PreemptionWatcher:
  """Answers, at each step boundary, whether to save and stop because of a SIGTERM.

  Use as a context manager around the training loop; the previous signal handler comes back on
  exit.
  """

  def __init__(self):
    self._requested = False
    self._previous = None
    self._multi_process = jax.process_count() > 1

  def __enter__(self) -> "PreemptionWatcher":
    if self._multi_process:
      return self
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    else:
      logging.warning("training outside the main thread: SIGTERM will not save a checkpoint")
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self._requested = True

  def reached(self, step: int) -> bool:
    """Whether to checkpoint `step` and stop; every process calls it at every step."""
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested
