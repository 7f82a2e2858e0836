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
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import flags

from bigmodel_jax.data.arithmetic import ArithmeticSource
from bigmodel_jax.data.array_batches import RandomBatches, padded_batches
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.models import presets
from bigmodel_jax.rl.reward_model import PreferencePairs, bradley_terry_sums, preference_pairs
from bigmodel_jax.rl.value_model import ValueModel
from bigmodel_jax.train import builders, metrics, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate
from bigmodel_jax.train.task import Data, Task
from experiments import cli

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*(k for k in TRAINER_READS if k not in ("data", "loss")), "task", "reward_model")


def pair_arrays(pairs: PreferencePairs) -> dict[str, np.ndarray]:
  """The pairs as the trainer's example arrays, each pair of weight 1."""
  return {**pairs._asdict(), "weight": np.ones(len(pairs.prompts), np.float32)}


def _pairs(batch: dict) -> PreferencePairs:
  return PreferencePairs(batch["prompts"], batch["chosen"], batch["rejected"])


def pair_metrics(graphdef):
  """(params, batch) -> the Bradley-Terry loss and pair accuracy sums of a batch of pairs."""
  return lambda params, batch: bradley_terry_sums(graphdef, params, _pairs(batch),
                                                  batch["weight"])


def pair_loss(graphdef):
  """(params, batch) -> (Bradley-Terry loss sum, weight sum): the trainer's training loss."""
  sums = pair_metrics(graphdef)

  def loss_fn(params, batch):
    out = sums(params, batch)
    return out["loss"], out["weight"]

  return loss_fn


def reward_model_task(config: ml_collections.ConfigDict, train: PreferencePairs,
                      heldout: PreferencePairs) -> Task:
  """The value model of the `model` section trained on `train` pairs, evaluated on `heldout`."""
  size = config.train.global_batch_size
  data = Data(
      train_iterator=lambda: RandomBatches(pair_arrays(train), size, config.seed),
      eval_batches=lambda: padded_batches(pair_arrays(heldout), size),
      description={"train_pairs": len(train.prompts), "heldout_pairs": len(heldout.prompts)})
  model_config = builders.model_config(config.model, ByteTokenizer.vocab_size)
  return Task(model_config=model_config, create_model=lambda c, rngs: ValueModel(c, rngs=rngs),
              data=data, train_loss=pair_loss, eval_metrics=pair_metrics,
              name=f"reward model ({presets.describe(model_config)})")


def pair_accuracy_of(pairs: PreferencePairs):
  """(graphdef, params) -> {"train_pair_accuracy": accuracy on `pairs`} (the trainer's
  final_metrics)."""

  def final_metrics(graphdef, params) -> dict:
    sums = jax.jit(pair_metrics(graphdef))(params, jax.tree.map(jnp.asarray, pair_arrays(pairs)))
    return {"train_pair_accuracy": float(sums["pair_accuracy"] / sums["weight"])}

  return final_metrics


def plot(rows: list[dict], path: str) -> None:
  """Training loss and held-out pair accuracy against step."""
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  train, heldout = ([r for r in rows if key in r] for key in ("loss", "eval_pair_accuracy"))
  ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train])
  ax_loss.set_ylabel("Bradley-Terry loss (train batch)")
  ax_acc.plot([r["step"] for r in heldout], [r["eval_pair_accuracy"] for r in heldout],
              marker="o", markersize=3)
  ax_acc.set_ylabel("held-out pair accuracy")
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the reward model through the trainer; returns (and writes) the summary."""
  split = dict(digits=config.task.digits, validation_fraction=config.task.validation_fraction,
               seed=config.task.split_seed)
  c = config.reward_model
  train = preference_pairs(ArithmeticSource(split="train", **split), c.train_pairs, config.seed)
  heldout = preference_pairs(ArithmeticSource(split="validation", **split), c.heldout_pairs,
                             config.seed + 1)
  trained = train_and_evaluate(derive(config, drop=("task", "reward_model")), workdir,
                               task=reward_model_task(config, train, heldout),
                               final_metrics=pair_accuracy_of(train))
  outputs.write_config(config, workdir)  # the experiment's whole config, over the trainer's
  summary = {**trained, "heldout_pair_accuracy": trained["final_eval"]["pair_accuracy"],
             "train_pair_accuracy": trained["final_metrics"]["train_pair_accuracy"],
             "train_pairs": len(train.prompts), "heldout_pairs": len(heldout.prompts),
             "optimizer": config.opt.name}
  outputs.write_summary(summary, workdir)
  plot(metrics.read_metrics(workdir), os.path.join(workdir, "reward_model.png"))
  return summary


def main(argv):
  del argv
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False, reads=READS)
