"""PNG plots of a run's metrics, and the two steps every experiment's figures share."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt


def label_axes(ax, xlabel: str, ylabel: str, title: str | None = None,
               legend_fontsize=None) -> None:
  """Axis labels, an optional title, a light grid and the legend of a line plot.

  Args:
    ax: the matplotlib Axes.
    xlabel: x-axis label.
    ylabel: y-axis label.
    title: the axes' title; None sets none.
    legend_fontsize: the legend's font size; None: matplotlib's default.
  """
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title is not None:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=legend_fontsize)


def save_figure(fig, path: str, dpi: int = 120) -> None:
  """Lays out `fig`, writes it to `path` (PNG) and closes it (pyplot keeps open figures alive).

  Args:
    fig: the matplotlib Figure.
    path: output file.
    dpi: resolution.
  """
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


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
  label_axes(ax, "step", "loss (nats/token)", title)
  save_figure(fig, path)
