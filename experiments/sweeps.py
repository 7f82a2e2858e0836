"""What the experiments that sweep the trainer share: one run through `train_and_evaluate` as a
row of figures, and the mean with a 95% confidence interval over seeds.

A run stopped by non-finite steps (a learning rate too high for the model) is a result of the
sweep, not a failure of the experiment: its row has infinite losses and the error's message.
"""

import math

import numpy as np
import scipy.stats

from bigmodel_jax.train import metrics
from bigmodel_jax.train.errors import NonFiniteError
from bigmodel_jax.train.loop import train_and_evaluate


def train_run(config, run_dir: str, task, final_metrics=None) -> dict:
  """Trains `task` through the trainer in `run_dir` (resumed there when rerun).

  Args:
    config: the run's config (the trainer's sections).
    run_dir: the run's directory.
    task: the train/task.py Task.
    final_metrics: the trainer's (graphdef, params) -> {name: value} of the final model.

  Returns:
    {"eval_loss", "eval" (every evaluation metric), "final_train_loss" (mean of the last tenth
    of the logged losses), "curve" ([(step, loss)] as logged), "final_metrics", "diverged"
    (None, or why the run stopped)}.
  """
  try:
    summary = train_and_evaluate(config, run_dir, task=task, final_metrics=final_metrics)
  except NonFiniteError as e:
    summary = {"final_eval_loss": math.inf, "final_eval": {}, "diverged": str(e)}
  curve = [(r["step"], r["loss"]) for r in metrics.read_metrics(run_dir) if "loss" in r]
  losses = [loss for _, loss in curve]
  tail = losses[-max(1, len(losses) // 10):]
  eval_loss = summary["final_eval_loss"]
  return {"eval_loss": eval_loss if np.isfinite(eval_loss) else math.inf,
          "eval": summary["final_eval"],
          "final_train_loss": float(np.mean(tail)) if tail and "diverged" not in summary
          else math.inf,
          "curve": curve, "final_metrics": summary.get("final_metrics"),
          "diverged": summary.get("diverged")}


def interval(values) -> dict:
  """Mean and 95% Student-t confidence interval over seeds.

  Args:
    values: one number per seed.

  Returns:
    {"mean", "ci95": [lo, hi] (None for one value), "half_width" (with two or more), "values"}.
  """
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return {"mean": mean, "ci95": None, "values": values.tolist()}
  t = scipy.stats.t.ppf(0.975, len(values) - 1)
  half = float(t * values.std(ddof=1) / np.sqrt(len(values)))
  return {"mean": mean, "ci95": [mean - half, mean + half], "half_width": half,
          "values": values.tolist()}
