"""Checks that a saved figure is readable: labelled axes, legends without `None`, titles inside.

`check_saved_figures(monkeypatch, module)` wraps `module.plots.save_figure` so that every figure
an experiment saves is checked (after its layout) before it is written.
"""


def _visible_axes(fig):
  """The figure's panels: not switched off and not colorbars."""
  return [ax for ax in fig.axes if ax.axison and not hasattr(ax, "_colorbar")]


def figure_problems(fig) -> list[str]:
  """What makes `fig` hard to read; [] when nothing does.

  Args:
    fig: a laid-out matplotlib Figure.

  Returns:
    One message per unlabelled axis, legend entry with `None`, or text outside the figure.
  """
  problems = []
  renderer = fig.canvas.get_renderer()
  box = fig.bbox
  for ax in _visible_axes(fig):
    name = ax.get_title() or "untitled axes"
    if not ax.get_xlabel() or not ax.get_ylabel():
      problems.append(f"{name}: x or y axis without a label")
    legend = ax.get_legend()
    for text in legend.get_texts() if legend else []:
      if "None" in text.get_text():
        problems.append(f"{name}: legend entry {text.get_text()!r}")
    title = ax.title.get_window_extent(renderer)
    if ax.get_title() and (title.x0 < box.x0 - 1 or title.x1 > box.x1 + 1 or title.y1 > box.y1 + 1):
      problems.append(f"{name}: title clipped by the figure's edge")
  return problems


def check_saved_figures(monkeypatch, module) -> list[str]:
  """Checks every figure `module` saves; returns the list of saved paths it fills.

  Args:
    monkeypatch: pytest's monkeypatch fixture.
    module: an experiment module that saves through `module.plots.save_figure`.

  Returns:
    The paths saved so far (a list that grows).
  """
  save = module.plots.save_figure
  saved = []

  def checked(fig, path, *args, **kwargs):
    fig.tight_layout()
    fig.canvas.draw()
    problems = figure_problems(fig)
    assert not problems, f"{path}: {problems}"
    saved.append(path)
    save(fig, path, *args, **kwargs)

  monkeypatch.setattr(module.plots, "save_figure", checked)
  return saved
