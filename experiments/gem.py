r"""GEM vs cross-entropy SFT on a multi-answer task: diversity, best-of-n, NLL.

  python -m experiments.gem --config=configs/gem.py --workdir=/tmp/gem

A small GPT-2 is trained FROM SCRATCH (no pre-trained model is used) on
`bigmodel_jax.data.multi_answer`: each prompt's correct set is every permutation of its letters,
and the training data shows them with a fixed skew. Each loss of `gem.losses` ("ce" or
"gem:<beta>") trains from the same seed on the same batches with AdamW; on `gem.eval_prompts`
held-out prompts it reports: NLL (nats/answer token) of the skewed data distribution and of the
uniform distribution over the correct set, mean token entropy, and over `gem.num_samples`
samples per prompt: accuracy of one sample, best-of-n accuracy (any sample correct), coverage
(fraction of the correct set produced), distinct-1 / distinct-2 and distinct answers.
Writes workdir/<loss>/metrics.jsonl, summary.json, gem_metrics.png and gem_training.png.
"""

import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from bigmodel_jax import losses
from bigmodel_jax.data.multi_answer import MultiAnswerTask
from bigmodel_jax.models import create_model, from_preset
from bigmodel_jax.train import metrics, outputs, plots
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def make_task(config) -> MultiAnswerTask:
  t = config.task
  return MultiAnswerTask(num_letters=t.num_letters, answer_len=t.answer_len, skew=tuple(t.skew),
                         held_out_fraction=t.held_out_fraction, seed=config.seed)


def token_loss(config, name: str):
  """`ce` or `gem:<beta>` -> a token loss (h from config.loss.h)."""
  if name == "ce":
    return losses.make_token_loss("cross_entropy")
  kind, _, beta = name.partition(":")
  if kind != "gem":
    raise ValueError(f"gem.losses: {name!r} is neither 'ce' nor 'gem:<beta>'")
  return losses.make_token_loss("gem", beta=float(beta), h=config.loss.h)


def _model(config, task):
  fields = {k: v for k, v in config.model.items() if k != "architecture"}
  model_config = from_preset(config.model.architecture, vocab_size=task.vocab_size,
                             max_seq_len=task.seq_len, **fields)
  graphdef, params = nnx.split(create_model(model_config, nnx.Rngs(config.seed)), nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def train(config, task, loss_name: str, workdir: str):
  """Trains one model with `loss_name`; returns (graphdef, params)."""
  graphdef, params = _model(config, task)
  loss = token_loss(config, loss_name)
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.train.lr, config.train.warmup_steps,
                                                config.train.steps, config.train.lr * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, weight_decay=config.train.weight_decay))

  @jax.jit
  def step(params, opt_state, batch):
    def objective(p):
      logits = nnx.merge(graphdef, p)(batch["inputs"])
      total, weight = loss(logits, batch["targets"], batch["weights"])
      ce = losses.cross_entropy(logits, batch["targets"], batch["weights"])[0]
      return total / weight, ce / weight

    (value, ce), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, ce

  opt_state, rng = optimizer.init(params), np.random.default_rng(config.seed)
  writer = metrics.MetricWriter(os.path.join(workdir, loss_name.replace(":", "_")))
  bar = metrics.progress_bar(config.train.steps, 0)
  bar.set_description(loss_name)
  for i in range(config.train.steps):
    batch = task.sample_batch(rng, config.train.batch_size, "train")
    params, opt_state, value, ce = step(params, opt_state, batch)
    if (i + 1) % config.train.log_every == 0 or i + 1 == config.train.steps:
      writer.write(i + 1, {"loss": value, "train_ce": ce})
      bar.set_postfix(loss=f"{float(value):.3f}", ce=f"{float(ce):.3f}")
    bar.update(1)
  bar.close()
  writer.close()
  return graphdef, params


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
  """Every held-out metric of one trained model."""
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
    rows = metrics.read_metrics(os.path.join(workdir, name.replace(":", "_")))
    ax.plot([r["step"] for r in rows], [r["train_ce"] for r in rows], label=name)
  plots.label_axes(ax, "step", "training cross-entropy (nats/answer token)")
  plots.save_figure(fig, path)


def run(config, workdir: str) -> dict:
  """Trains and evaluates every loss of `gem.losses`; writes and returns the summary."""
  outputs.write_config(config, workdir)
  task = make_task(config)
  summary = {}
  for name in config.gem.losses:
    graphdef, params = train(config, task, name, workdir)
    summary[name] = evaluate(config, task, graphdef, params)
    print(f"[gem] {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary[name].items()),
          flush=True)
  out = {"h": config.loss.h, "trained_from_scratch": True, "num_samples": config.gem.num_samples,
         "eval_prompts": len(task.splits["test"][:config.gem.eval_prompts]), "losses": summary}
  outputs.write_summary(out, workdir)
  _plot_metrics(summary, os.path.join(workdir, "gem_metrics.png"))
  _plot_training(workdir, list(summary), os.path.join(workdir, "gem_training.png"))
  return out


# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("seed", "model", "loss", "task", "train", "gem")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, reads=READS)
