r"""AdamW vs AdaLomo vs LOMO pre-training on the default corpus (LOMO/AdaLomo: the fused step).

  python -m experiments.train_lomo --config=configs/lomo.py --workdir=/tmp/train_lomo

Each of `lomo.train_optimizers` trains the config's model from the same seed on the same batches
for `train.steps` steps (learning rate `lomo.lr_<name>`, the config's warmup + cosine schedule,
global-norm clipping `opt.max_grad_norm`: by optax for AdamW, by the two-pass method in the fused
step). Writes workdir/<name>/metrics.jsonl, summary.json (final losses, step times) and
loss_curves.png.
"""

import json
import os
import time

import jax
import matplotlib
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import sharding
from bigmodel_jax.optim.factory import make_optimizer, opt_with
from bigmodel_jax.train import builders, metrics, outputs, plots
from bigmodel_jax.train.fused_step import make_fused_train_step
from bigmodel_jax.train.loop import evaluate
from bigmodel_jax.train.state import init_train_state
from bigmodel_jax.train.step import make_eval_step, make_train_step
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _steps(config, name, model_config, mesh, rules):
  """(initial state, jitted train step, jitted eval step) for optimizer `name`."""
  fused = name in config.lomo.fused_optimizers
  opt = opt_with(config.opt, name=name, lr=config.lomo[f"lr_{name}"])
  if fused:
    opt.max_grad_norm = 0.0  # clipped by the fused step's two passes instead
  optimizer, schedule = make_optimizer(opt, config.train.steps)
  graphdef, state, shardings = init_train_state(model_config, optimizer, mesh, rules,
                                                config.seed)
  if fused:
    step = make_fused_train_step(model_config, optimizer, schedule, config.opt.max_grad_norm)
  else:
    step = make_train_step(graphdef, optimizer, schedule)
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  train_step = jax.jit(step, in_shardings=(shardings, batch_sharding),
                       out_shardings=(shardings, replicated), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(graphdef), in_shardings=(shardings.params, batch_sharding),
                      out_shardings=replicated)
  return state, train_step, eval_step


def _global(batch, batch_sharding):
  return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}


def train_one(config, name: str, data, workdir: str) -> dict:
  """Trains with optimizer `name`; returns its summary row."""
  mesh, rules = builders.mesh_and_rules(config)
  model_config = builders.model_config(config.model, data.tokenizer.vocab_size)
  state, train_step, eval_step = _steps(config, name, model_config, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh)
  writer = metrics.MetricWriter(os.path.join(workdir, name))
  bar = metrics.progress_bar(config.train.steps, 0)
  bar.set_description(name)
  train_iter, losses, eval_loss = data.train_iterator(), [], None
  start, timed_start = time.time(), None
  for step in range(config.train.steps):
    state, step_metrics = train_step(state, _global(next(train_iter), batch_sharding))
    done = step + 1
    if done == 1:
      jax.block_until_ready(state)
      timed_start = time.time()
    if done % config.train.log_every == 0 or done == config.train.steps:
      step_metrics = jax.device_get(step_metrics)
      losses.append(float(step_metrics["loss"]))
      writer.write(done, step_metrics)
      bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if done % config.train.eval_every == 0 or done == config.train.steps:
      eval_loss, _ = evaluate(eval_step, state.params, data.eval_batches(), batch_sharding)
      writer.write(done, {"eval_loss": eval_loss})
      bar.write(f"{name} step {done}: validation loss {eval_loss:.4f}")
    bar.update(1)
  jax.block_until_ready(state)
  bar.close()
  writer.close()
  steps_timed = config.train.steps - 1
  return {"lr": config.lomo[f"lr_{name}"], "fused": name in config.lomo.fused_optimizers,
          "final_train_loss": float(np.mean(losses[-3:])), "final_eval_loss": eval_loss,
          "s_per_step": (time.time() - timed_start) / steps_timed if steps_timed else None,
          "wall_time_s": time.time() - start}


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
  data = builders.make_data(config)
  names = list(config.lomo.train_optimizers)
  summary = {"steps": config.train.steps, "max_grad_norm": config.opt.max_grad_norm,
             "optimizers": {name: train_one(config, name, data, workdir) for name in names}}
  outputs.write_summary(summary, workdir)
  _plot(workdir, names, os.path.join(workdir, "loss_curves.png"))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main)
