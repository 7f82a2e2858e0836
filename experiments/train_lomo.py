r"""AdamW vs AdaLomo vs LOMO pre-training on the default corpus (LOMO/AdaLomo: the fused step).

  python -m experiments.train_lomo --config=configs/lomo.py --workdir=/tmp/train_lomo

Each of `lomo.train_optimizers` trains the config's model from the same seed on the same batches
for `train.steps` steps (learning rate `lomo.lr_<name>`, the config's warmup + cosine schedule,
global-norm clipping `opt.max_grad_norm`: by optax for AdamW, by the two-pass method in the fused
step). Each run goes through the trainer (`train_and_evaluate`), so it checkpoints, resumes
and guards against non-finite steps like `experiments.pretrain`. Writes workdir/<name>/ (the
trainer's run directory), summary.json (final losses, step times) and loss_curves.png.
"""

import json
import os

import matplotlib
import ml_collections
import numpy as np
from absl import app, flags

from bigmodel_jax.train import metrics, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.fused_step import fused_step
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate, unfused_step
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def run_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The config of one optimizer's run: `opt` with `name` and its learning rate `lomo.lr_<name>`
  (and, for a fused optimizer, no optax clipping: the fused step clips by two passes)."""
  fused = name in config.lomo.fused_optimizers
  return derive(config, values={
      "opt.name": name, "opt.lr": config.lomo[f"lr_{name}"],
      "opt.max_grad_norm": 0.0 if fused else config.opt.max_grad_norm})


def train_one(config: ml_collections.ConfigDict, name: str, workdir: str) -> dict:
  """Trains with optimizer `name` through the trainer (checkpoints and resume in
  workdir/<name>); returns its summary row."""
  fused = name in config.lomo.fused_optimizers
  make_step = fused_step(config.opt.max_grad_norm) if fused else unfused_step
  run_dir = os.path.join(workdir, name)
  summary = train_and_evaluate(run_config(config, name), run_dir, make_step)
  losses = [r["loss"] for r in metrics.read_metrics(run_dir) if "loss" in r]
  tokens_per_step = config.train.global_batch_size * config.data.seq_len
  return {"lr": config.lomo[f"lr_{name}"], "fused": fused,
          "final_train_loss": float(np.mean(losses[-3:])),
          "final_eval_loss": summary["final_eval_loss"],
          "s_per_step": (tokens_per_step / summary["tokens_per_s"]
                         if summary["tokens_per_s"] else None),
          "wall_time_s": summary["wall_time_s"]}


def _plot(workdir: str, names, path: str) -> None:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, name in enumerate(names):
    rows = metrics.read_metrics(os.path.join(workdir, name))
    color = f"C{i}"
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    ax.plot(*zip(*train), color=color, alpha=0.6, label=f"{name} train")
    ax.plot(*zip(*evals), color=color, marker="o", linestyle="--", label=f"{name} validation")
  plots.label_axes(ax, "step", "loss (nats/token)")
  plots.save_figure(fig, path)


def run(config, workdir: str) -> dict:
  """Trains every optimizer of `lomo.train_optimizers`; writes and returns the summary."""
  outputs.write_config(config, workdir)
  names = list(config.lomo.train_optimizers)
  summary = {"steps": config.train.steps, "max_grad_norm": config.opt.max_grad_norm,
             "optimizers": {name: train_one(config, name, workdir) for name in names}}
  outputs.write_summary(summary, workdir)
  _plot(workdir, names, os.path.join(workdir, "loss_curves.png"))
  return summary


# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*TRAINER_READS, "lomo")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, reads=READS)
