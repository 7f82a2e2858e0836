"""The forgetting comparison's report: the best run of every method, the target check and the
forgetting-vs-accuracy plot (experiments/finetune.py writes them into summary.json and
forgetting_vs_accuracy.png)."""

import matplotlib.pyplot as plt

from bigmodel_jax.train import plots  # sets the Agg backend


def best_per_method(runs: list[dict]) -> dict:
  """For every method, its run with the highest accuracy; among runs of equal accuracy, the one
  that forgets least (a practitioner who reaches the same accuracy at two learning rates keeps
  the one that forgets less; the same rule for every method)."""
  best = {}
  for run in runs:
    key = (run["ft_accuracy"], -run["forgetting"])
    current = best.get(run["method"])
    if current is None or key > (current["ft_accuracy"], -current["forgetting"]):
      best[run["method"]] = run
  return best


def target_check(best: dict, method: str, baseline: str) -> dict | None:
  """Whether `method` keeps accuracy within 2 points of `baseline` and forgets <= half as much.

  Args:
    best: method -> its chosen run (`best_per_method`, or the runs of one learning rate).
    method: the method checked (e.g. "mofo@0.1").
    baseline: the method it is compared with (e.g. "adamw").

  Returns:
    The gap, the forgetting ratio and the verdicts; None if either method has no run.
  """
  if method not in best or baseline not in best:
    return None
  ours, theirs = best[method], best[baseline]
  accuracy_gap = 100 * (theirs["ft_accuracy"] - ours["ft_accuracy"])
  ratio = (ours["forgetting"] / theirs["forgetting"] if theirs["forgetting"] > 0
           else float("inf"))
  return {"method": method, "baseline": baseline, "accuracy_gap_points": accuracy_gap,
          "forgetting_ratio": ratio, "accuracy_within_2_points": accuracy_gap <= 2,
          "forgetting_at_most_half": ratio <= 0.5, "met": accuracy_gap <= 2 and ratio <= 0.5}


def target_check_per_lr(runs: list[dict], method: str, baseline: str) -> dict:
  """`target_check` at every learning rate both methods ran: {str(lr): check}."""
  checks = {}
  for lr in sorted({run["lr"] for run in runs}):
    at_lr = {run["method"]: run for run in runs if run["lr"] == lr}
    check = target_check(at_lr, method, baseline)
    if check is not None:
      checks[f"{lr:g}"] = check
  return checks


def plot_forgetting(runs: list[dict], best: dict, path: str) -> None:
  """Forgetting against fine-tune accuracy, a point per run, the best run of each method ringed."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, method in enumerate(sorted({r["method"] for r in runs})):
    color = f"C{i}"
    points = [(100 * r["ft_accuracy"], r["forgetting"]) for r in runs if r["method"] == method]
    ax.scatter(*zip(*points), color=color, label=method, alpha=0.6)
    top = best[method]
    ax.scatter([100 * top["ft_accuracy"]], [top["forgetting"]], s=160, facecolors="none",
               edgecolors=color, linewidths=2)
    ax.annotate(f"lr={top['lr']:g}", (100 * top["ft_accuracy"], top["forgetting"]),
                textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
  plots.label_axes(ax, "fine-tune exact-match accuracy (%)", "forgetting (nats/token)",
                   "increase of pre-training validation loss vs fine-tune accuracy\n"
                   "(ringed: the best learning rate of each method)", legend_fontsize=8)
  plots.save_figure(fig, path)
