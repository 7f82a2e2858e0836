"""PNG plots of a run's metrics."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt


def plot_loss_curves(rows: list[dict], path: str, title: str = "") -> None:
  """Train and validation loss (nats/token) against step.

  Args:
    rows: metrics.jsonl rows; train rows carry "loss", evaluation rows "eval_loss".
    path: output PNG path.
    title: figure title.
  """
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for key, label in (("loss", "train"), ("eval_loss", "validation")):
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), float)]
    if points:
      steps, values = zip(*points)
      ax.plot(steps, values, label=label, marker="o" if key == "eval_loss" else None)
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats/token)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
