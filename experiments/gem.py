r"""GEM vs cross-entropy SFT on a multi-answer task: diversity, best-of-n, NLL.

  python -m experiments.gem --config=configs/gem.py --workdir=/tmp/gem

A small GPT-2 is trained FROM SCRATCH (no pre-trained model is used) on
`bigmodel_jax.data.multi_answer`: each prompt's correct set is every permutation of its letters,
and the training data shows them with a fixed skew. Each loss of `gem.losses` ("ce" or
"gem:<beta>") trains from the same seed on the same batches with AdamW, through the trainer
(`train_and_evaluate`: checkpoints, resume, non-finite guard, progress); on `gem.eval_prompts`
held-out prompts it reports: NLL (nats/answer token) of the skewed data distribution and of the
uniform distribution over the correct set, mean token entropy, and over `gem.num_samples`
samples per prompt: accuracy of one sample, best-of-n accuracy (any sample correct), coverage
(fraction of the correct set produced), distinct-1 / distinct-2 and distinct answers.
Writes workdir/<loss>/ (the trainer's run: config.json, metrics.jsonl, checkpoints, its
summary.json with these metrics as "final_metrics"), summary.json, gem_metrics.png and
gem_training.png (held-out cross-entropy during training).
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from bigmodel_jax.data.multi_answer import MultiAnswerBatches, MultiAnswerTask
from bigmodel_jax.train import builders, metrics, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate
from bigmodel_jax.train.task import Data, language_model_task
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def make_task(config) -> MultiAnswerTask:
  t = config.task
  return MultiAnswerTask(num_letters=t.num_letters, answer_len=t.answer_len, skew=tuple(t.skew),
                         held_out_fraction=t.held_out_fraction, seed=config.seed)


def run_config(config: ml_collections.ConfigDict, loss_name: str) -> ml_collections.ConfigDict:
  """The trainer's config of one loss of `gem.losses`: `loss` set from the name."""
  if loss_name == "ce":
    loss = {"loss.name": "cross_entropy"}
  else:
    kind, _, beta = loss_name.partition(":")
    if kind != "gem":
      raise ConfigError(f"gem.losses: {loss_name!r} is neither 'ce' nor 'gem:<beta>'")
    loss = {"loss.name": "gem", "loss.beta": float(beta)}
  return derive(config, drop=("task", "gem"), values=loss)


def task_data(config: ml_collections.ConfigDict, task: MultiAnswerTask) -> Data:
  """The task as the trainer's data: skewed training batches, held-out evaluation batches."""
  if config.model.max_seq_len < task.seq_len:
    raise ConfigError(f"model.max_seq_len ({config.model.max_seq_len}) must be >= the task's "
                      f"sequence length 2 * task.answer_len + 1 = {task.seq_len}")
  size = config.train.global_batch_size
  rng = np.random.default_rng(config.train.eval_seed)
  eval_batches = [task.sample_batch(rng, size, "test") for _ in range(config.train.eval_batches)]
  return Data(
      tokenizer=task,
      train_iterator=lambda: MultiAnswerBatches(task, size, config.seed),
      eval_batches=lambda: eval_batches,
      bytes_per_token=None,
      description={split: {"prompts": len(prompts)} for split, prompts in task.splits.items()},
      seq_len=task.seq_len)


def nll_and_entropy(graphdef, params, batch) -> tuple[float, float]:
  """(NLL in nats per weighted token, mean entropy of the next-token distribution there)."""
  logits = nnx.merge(graphdef, params)(jnp.asarray(batch["inputs"]))
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  weights = jnp.asarray(batch["weights"])
  nll = -jnp.take_along_axis(log_p, jnp.asarray(batch["targets"])[..., None], -1)[..., 0]
  entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  total = jnp.sum(weights)
  return float(jnp.sum(nll * weights) / total), float(jnp.sum(entropy * weights) / total)


def sample_answers(graphdef, params, task, prompts, num_samples, temperature, key):
  """[len(prompts), num_samples, k + 1] sampled answer tokens (ancestral, temperature)."""
  model = nnx.merge(graphdef, params)
  n = len(prompts) * num_samples
  tokens = jnp.zeros((n, task.seq_len), jnp.int32)
  tokens = tokens.at[:, :task.answer_len].set(jnp.repeat(jnp.asarray(prompts), num_samples, 0))
  tokens = tokens.at[:, task.answer_len].set(task.sep_id)
  for k in range(task.answer_len + 1):
    position = task.answer_len + k
    logits = model(tokens)[:, position].astype(jnp.float32) / temperature
    choice = jax.random.categorical(jax.random.fold_in(key, k), logits)
    if position + 1 < task.seq_len:
      tokens = tokens.at[:, position + 1].set(choice)
    else:
      last = choice
  answers = jnp.concatenate([tokens[:, task.prompt_len:], last[:, None]], axis=1)
  return np.asarray(answers).reshape(len(prompts), num_samples, -1)


def _distinct(samples: np.ndarray, n: int) -> float:
  grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
  return len(set(grams)) / len(grams)


def sample_metrics(task, prompts, samples) -> dict:
  """Accuracy, best-of-n, coverage and distinct-n of the samples of every prompt."""
  rows = []
  for prompt, group in zip(prompts, samples):
    index = [task.answer_index(prompt, a) for a in group]
    correct = {i for i in index if i >= 0}
    letters = group[:, :-1]  # the answer letters, without EOS
    rows.append({
        "accuracy": float(np.mean([i >= 0 for i in index])),
        "best_of_n_accuracy": float(bool(correct)),
        "coverage": len(correct) / len(task.permutations),
        "distinct_1": _distinct(letters, 1),
        "distinct_2": _distinct(letters, 2),
        "distinct_answers": len({tuple(a) for a in group}) / len(group),
        "rare_answer_rate": float(np.mean([i >= 3 for i in index])),
    })
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluate(config, task, graphdef, params) -> dict:
  """Every held-out metric of one trained model (the trainer's `final_metrics`)."""
  rng = np.random.default_rng(config.seed + 1)
  prompts = task.splits["test"][:config.gem.eval_prompts]
  skewed = task.batch(task.sequences(prompts, rng.choice(len(task.permutations),
                                                         size=len(prompts), p=task.probs)))
  nll, entropy = nll_and_entropy(graphdef, params, skewed)
  uniform_nll, _ = nll_and_entropy(graphdef, params, task.all_answers_batch(prompts))
  samples = sample_answers(graphdef, params, task, prompts, config.gem.num_samples,
                           config.gem.temperature, jax.random.key(config.seed))
  return {"heldout_nll": nll, "heldout_uniform_correct_nll": uniform_nll,
          "token_entropy": entropy, **sample_metrics(task, prompts, samples)}


def _plot_metrics(summary: dict, path: str) -> None:
  keys = ["heldout_nll", "heldout_uniform_correct_nll", "token_entropy", "accuracy",
          "best_of_n_accuracy", "coverage", "distinct_2", "rare_answer_rate"]
  fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
  names = list(summary)
  for ax, key in zip(axes.flat, keys):
    ax.bar(names, [summary[n][key] for n in names], color=[f"C{i}" for i in range(len(names))])
    ax.set_title(key)
    ax.set_xlabel("training loss")
    ax.set_ylabel(key)
    ax.tick_params(axis="x", rotation=30)
  plots.save_figure(fig, path, dpi=110)


def _plot_training(workdir: str, names, path: str) -> None:
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name in names:
    rows = [r for r in metrics.read_metrics(_run_dir(workdir, name)) if "eval_loss" in r]
    ax.plot([r["step"] for r in rows], [r["eval_loss"] for r in rows], marker="o", label=name)
  plots.label_axes(ax, "step", "held-out cross-entropy (nats/answer token)")
  plots.save_figure(fig, path)


def _run_dir(workdir: str, loss_name: str) -> str:
  return os.path.join(workdir, loss_name.replace(":", "_"))


def run(config, workdir: str) -> dict:
  """Trains and evaluates every loss of `gem.losses`; writes and returns the summary."""
  outputs.write_config(config, workdir)
  task = make_task(config)
  data = task_data(config, task)
  summary = {}
  model_config = builders.model_config(config.model, data.tokenizer.vocab_size)
  for name in config.gem.losses:
    run = run_config(config, name)
    summary[name] = train_and_evaluate(
        run, _run_dir(workdir, name), task=language_model_task(model_config, data, run.loss),
        final_metrics=functools.partial(evaluate, config, task))["final_metrics"]
    print(f"[gem] {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary[name].items()),
          flush=True)
  out = {"h": config.loss.h, "trained_from_scratch": True, "num_samples": config.gem.num_samples,
         "eval_prompts": len(task.splits["test"][:config.gem.eval_prompts]), "losses": summary}
  outputs.write_summary(out, workdir)
  _plot_metrics(summary, os.path.join(workdir, "gem_metrics.png"))
  _plot_training(workdir, list(summary), os.path.join(workdir, "gem_training.png"))
  return out


# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*(k for k in TRAINER_READS if k != "data"), "task", "gem")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, reads=READS)
