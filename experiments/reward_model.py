r"""Bradley-Terry reward model: `python -m experiments.reward_model
--config=configs/reward_model_arithmetic.py --workdir=W`.

Trains a reward model on preference pairs generated from the arithmetic task's programmatic
reward and reports its pair accuracy on held-out pairs (validation problems, never trained on).
Writes config.json, metrics.jsonl (loss, train-batch and held-out accuracy), summary.json
({"heldout_pair_accuracy", "train_pair_accuracy", ...}) and reward_model.png.
"""

import json
import os

import jax
import matplotlib
import ml_collections
import numpy as np
import optax
from absl import flags
from flax import nnx

from bigmodel_jax.data.arithmetic import ArithmeticSource
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.rl.reward_model import PreferencePairs, bradley_terry_loss, preference_pairs
from bigmodel_jax.rl.value_model import ValueModel
from bigmodel_jax.train import builders, outputs, plots
from bigmodel_jax.train.metrics import MetricWriter, progress_bar
from bigmodel_jax.train.optimizers import make_optimizer
from experiments import cli

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("seed", "model", "opt", "task", "reward_model")


def _batch(pairs: PreferencePairs, rng: np.random.Generator, size: int) -> PreferencePairs:
  index = rng.integers(0, len(pairs.prompts), size)
  return PreferencePairs(*(x[index] for x in pairs))


def plot(rows: list[dict], path: str) -> None:
  """Training loss and held-out pair accuracy against step."""
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  steps = [r["step"] for r in rows]
  ax_loss.plot(steps, [r["loss"] for r in rows])
  ax_loss.set_ylabel("Bradley-Terry loss (train batch)")
  ax_acc.plot(steps, [r["heldout_pair_accuracy"] for r in rows], marker="o", markersize=3)
  ax_acc.set_ylabel("held-out pair accuracy")
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the reward model; returns (and writes) the summary."""
  outputs.write_config(config, workdir)
  c = config.reward_model
  split = dict(digits=config.task.digits, validation_fraction=config.task.validation_fraction,
               seed=config.task.split_seed)
  train = preference_pairs(ArithmeticSource(split="train", **split), c.train_pairs, config.seed)
  heldout = preference_pairs(ArithmeticSource(split="validation", **split), c.heldout_pairs,
                             config.seed + 1)
  model_config = builders.model_config(config.model, ByteTokenizer.vocab_size)
  graphdef, params = nnx.split(ValueModel(model_config, rngs=nnx.Rngs(config.seed)))
  params = nnx.to_pure_dict(params)
  optimizer, _ = make_optimizer(config.opt, c.steps)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    (loss, accuracy), grads = jax.value_and_grad(
        lambda p: bradley_terry_loss(graphdef, p, batch), has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, accuracy

  evaluate = jax.jit(lambda p, pairs: bradley_terry_loss(graphdef, p, pairs))
  rng, writer, rows = np.random.default_rng(config.seed), MetricWriter(workdir), []
  bar = progress_bar(c.steps, 0)
  for i in range(c.steps):
    bar.update(1)
    params, opt_state, loss, accuracy = step(params, opt_state, _batch(train, rng, c.batch_size))
    if (i + 1) % c.log_every == 0 or i + 1 == c.steps:
      row = {"step": i + 1, "loss": float(loss), "batch_accuracy": float(accuracy),
             "heldout_pair_accuracy": float(evaluate(params, heldout)[1])}
      writer.write(i + 1, row)
      rows.append(row)
  bar.close()
  writer.close()
  summary = {"heldout_pair_accuracy": rows[-1]["heldout_pair_accuracy"],
             "train_pair_accuracy": float(evaluate(params, train)[1]),
             "train_pairs": len(train.prompts), "heldout_pairs": len(heldout.prompts),
             "steps": c.steps, "optimizer": config.opt.name,
             "num_params": int(sum(x.size for x in jax.tree.leaves(params)))}
  outputs.write_summary(summary, workdir)
  plot(rows, os.path.join(workdir, "reward_model.png"))
  return summary


def main(argv):
  del argv
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False, reads=READS)
