r"""Adam-mini vs AdamW: memory, update time and pretraining, measured.

  python -m experiments.compare_optimizers --config=configs/adam_mini_vs_adamw.py --workdir=/tmp/cmp

Parts (`--config.compare.parts`), each writing its figures into `summary.json` in the workdir:
  state_memory: optimizer-state bytes (jax.eval_shape, nothing allocated) and the ratio
    Adam-mini / AdamW, for the configs in compare.state_memory_models.
  step_memory: XLA's peak memory of the compiled (never run) train step per device.
  update_time: optimizer update + apply time vs optax.adamw on random values of a model's
    parameter shapes, same process, interleaved repetitions; the median ratio.
  pretrain: `train_and_evaluate` once per optimizer, identical seed and schedule, in
    workdir/<optimizer>; validation curves in validation_loss.png.
"""

import importlib
import os
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax.train import builders, memory, metrics, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.loop import TRAINER_READS
from bigmodel_jax.train.optimizers import make_optimizer, opt_with
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _named_config(name: str, base):
  """`file:size` (e.g. "gpt2:124m") -> that config, with the comparison's `opt` section."""
  module, _, size = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(size)
  config.opt = base.opt
  config.mesh = base.mesh
  return config


def _model(config):
  return builders.model_config(config.model, None if config.model.vocab_size else 256)


def _optimizer(config, name):
  return make_optimizer(opt_with(config.opt, name=name), config.train.steps)


def state_memory(config) -> dict:
  """(a) Optimizer-state bytes per model and optimizer; ratio Adam-mini / AdamW."""
  mesh, rules = builders.mesh_and_rules(config)
  out = {}
  for name in config.compare.state_memory_models:
    model_config = _model(_named_config(name, config))
    row = {}
    for opt_name in config.compare.memory_optimizers:
      optimizer, _ = _optimizer(config, opt_name)
      num_params, param_bytes, opt_bytes = memory.state_bytes(model_config, optimizer, mesh,
                                                              rules)
      row.update(num_params=num_params, param_bytes=param_bytes)
      row[f"{opt_name}_state_bytes"] = opt_bytes
    row["ratio_adam_mini_over_adamw"] = row["adam_mini_state_bytes"] / row["adamw_state_bytes"]
    out[name] = row
    print(f"[state memory] {name}: {row}", flush=True)
  return out


def step_memory(config) -> dict:
  """(b) Peak bytes per device of the compiled train step."""
  mesh, rules = builders.mesh_and_rules(config)
  out = {}
  for name in config.compare.step_memory_models:
    model_config = _model(_named_config(name, config))
    row = {"global_batch_size": config.compare.step_memory_batch_size,
           "seq_len": config.compare.step_memory_seq_len, "devices": jax.device_count()}
    for opt_name in config.compare.memory_optimizers:
      optimizer, schedule = _optimizer(config, opt_name)
      start = time.time()
      row[f"{opt_name}_peak_bytes"] = memory.compiled_step_peak_bytes(
          model_config, optimizer, schedule, mesh, rules,
          global_batch_size=config.compare.step_memory_batch_size,
          seq_len=config.compare.step_memory_seq_len)
      print(f"[step memory] {name} {opt_name}: {row[f'{opt_name}_peak_bytes']:,} B "
            f"(compiled in {time.time() - start:.0f} s)", flush=True)
    row["saved_bytes"] = row["adamw_peak_bytes"] - row["adam_mini_peak_bytes"]
    out[name] = row
  return out


def update_time(config) -> dict:
  """(c) Jitted update + apply time, Adam-mini / optax.adamw, interleaved, median ratio."""
  from flax import nnx

  from bigmodel_jax.sharding import abstract_model

  model_config = _model(_named_config(config.compare.update_time_model, config))
  _, abstract = abstract_model(model_config)
  shapes = nnx.to_pure_dict(abstract)
  keys = iter(jax.random.split(jax.random.key(0), 2 * len(jax.tree.leaves(shapes))))
  rand = lambda x: 0.02 * jax.random.normal(next(keys), x.shape, x.dtype)
  params, grads = jax.tree.map(rand, shapes), jax.tree.map(rand, shapes)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  hyper = dict(b1=config.opt.b1, b2=config.opt.b2, eps=config.opt.eps,
               weight_decay=config.opt.weight_decay)
  from bigmodel_jax.models import LAYER_AXES
  from bigmodel_jax.optim import adam_mini
  from bigmodel_jax.train.optimizers import decay_mask
  optimizers = {"adamw": optax.adamw(1e-3, mask=decay_mask, **hyper),
                "adam_mini": adam_mini(1e-3, layer_axes=LAYER_AXES, **hyper)}
  runs = {}
  for name, opt in optimizers.items():
    def step(p, s, g, opt=opt):
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s
    fn = jax.jit(step, donate_argnums=(0, 1))
    p = jax.tree.map(jnp.copy, params)
    s = opt.init(p)
    p, s = fn(p, s, grads)  # compile + warm up
    jax.block_until_ready((p, s))
    runs[name] = [fn, p, s, []]
  for _ in range(config.compare.update_time_repeats):
    for name in optimizers:  # interleaved: both see the same machine state
      fn, p, s, times = runs[name]
      start = time.perf_counter()
      p, s = fn(p, s, grads)
      jax.block_until_ready((p, s))
      times.append(time.perf_counter() - start)
      runs[name][1:3] = [p, s]
  adamw, mini = runs["adamw"][3], runs["adam_mini"][3]
  ratios = [m / a for m, a in zip(mini, adamw)]
  out = {"model": config.compare.update_time_model, "num_params": int(num_params),
         "repeats": len(ratios), "adamw_median_s": statistics.median(adamw),
         "adam_mini_median_s": statistics.median(mini),
         "median_ratio_adam_mini_over_adamw": statistics.median(ratios),
         "device": jax.devices()[0].device_kind, "devices": jax.device_count()}
  print(f"[update time] {out}", flush=True)
  return out


def pretrain(config, workdir: str) -> dict:
  """(d) One pretraining run per optimizer; identical seed, data order and schedule."""
  from bigmodel_jax.train.loop import train_and_evaluate

  out = {}
  for name in config.compare.optimizers:
    run = derive(config, drop=("compare",),
                 values={"opt.name": name, "opt.lr": config.compare.lr[name]})
    print(f"[pretrain] {name} at lr {run.opt.lr}", flush=True)
    summary = train_and_evaluate(run, os.path.join(workdir, name))
    rows = metrics.read_metrics(os.path.join(workdir, name))
    curve = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    out[name] = {"lr": run.opt.lr, "final_eval_loss": summary["final_eval_loss"],
                 "validation_curve": curve, "wall_time_s": summary["wall_time_s"]}
    print(f"[pretrain] {name}: final validation loss {out[name]['final_eval_loss']:.4f}",
          flush=True)
  if "adamw" in out and "adam_mini" in out:
    out["adam_mini_relative_to_adamw"] = (out["adam_mini"]["final_eval_loss"]
                                          / out["adamw"]["final_eval_loss"] - 1)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name in config.compare.optimizers:
    steps, losses = zip(*out[name]["validation_curve"])
    ax.plot(steps, losses, marker="o", label=f"{name} (lr {out[name]['lr']:g})")
  plots.label_axes(ax, "step", "validation loss (nats/token)",
                   "Adam-mini vs AdamW, same seed and schedule")
  plots.save_figure(fig, os.path.join(workdir, "validation_loss.png"))
  return out


def _plot_memory(summary: dict, workdir: str) -> None:
  rows = []
  for name, row in summary.get("state_memory", {}).items():
    rows.append((f"{name}\nstate", row["adamw_state_bytes"], row["adam_mini_state_bytes"]))
  for name, row in summary.get("step_memory", {}).items():
    rows.append((f"{name}\nstep peak", row["adamw_peak_bytes"], row["adam_mini_peak_bytes"]))
  if not rows:
    return
  fig, ax = plt.subplots(figsize=(2.2 * len(rows) + 2, 4.5))
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [r[1] / 2**30 for r in rows], 0.4, label="AdamW")
  ax.bar(x + 0.2, [r[2] / 2**30 for r in rows], 0.4, label="Adam-mini")
  ax.set_xticks(x, [r[0] for r in rows])
  ax.set_xlabel("model: optimizer state (whole model) or compiled step peak (per device)")
  ax.set_ylabel("GiB")
  ax.set_title("Adam-mini vs AdamW memory")
  ax.legend()
  plots.save_figure(fig, os.path.join(workdir, "memory.png"))


def run(config, workdir: str) -> dict:
  """Runs the parts named in config.compare.parts; writes config.json, summary.json and PNGs."""
  outputs.write_config(config, workdir)
  parts = {"state_memory": lambda: state_memory(config),
           "step_memory": lambda: step_memory(config),
           "update_time": lambda: update_time(config),
           "pretrain": lambda: pretrain(config, workdir)}
  unknown = sorted(set(config.compare.parts) - set(parts))
  if unknown:
    raise ValueError(f"compare.parts: unknown {unknown}; choose from {sorted(parts)}")
  summary = {}
  for part in config.compare.parts:
    summary[part] = parts[part]()
    outputs.write_summary(summary, workdir)
  _plot_memory(summary, workdir)
  return summary


# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*TRAINER_READS, "compare")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program, so that tests can import `run`
  # from several experiments into one process without absl's duplicate-flag error.
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main, reads=READS)
