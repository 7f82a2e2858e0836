r"""Peak memory of the compiled train step: AdamW, SGD (unfused), LOMO and AdaLomo (fused).

  python -m experiments.lomo_memory --config=configs/lomo_memory.py --workdir=/tmp/lomo_memory

For every `memory.models` entry, at batch `memory.batch_size` x `memory.seq_len`,
XLA's memory analysis of the jitted step (compiled, never run; donated state), per device of the
config's mesh. Writes config.json, summary.json (bytes, and each peak over AdamW's),
metrics.jsonl (one row per model and optimizer) and memory.png.
"""

import importlib
import json
import os

import matplotlib
from absl import app, flags

from bigmodel_jax.train import builders, fused_step, memory, metrics, outputs, plots
from bigmodel_jax.train.optimizers import make_optimizer, opt_with
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _model_config(name: str):
  module, _, size = name.partition(":")
  model = importlib.import_module(f"configs.{module}").get_config(size).model
  return builders.model_config(model, None if model.vocab_size else 256)


def _optimizer(config, name: str, fused: bool):
  # the fused step clips by its own two-pass method, never by optax's; one step is compiled and
  # never run, so a constant schedule stands for any
  opt = opt_with(config.opt, name=name, schedule="constant",
                 max_grad_norm=0.0 if fused else config.opt.max_grad_norm)
  return make_optimizer(opt, total_steps=1)


def peak_bytes(config, model_name: str, opt_name: str) -> int:
  """XLA's peak bytes per device of one model's train step with one optimizer."""
  mesh, rules = builders.mesh_and_rules(config)
  model_config = _model_config(model_name)
  fused = opt_name in config.memory.fused_optimizers
  optimizer, schedule = _optimizer(config, opt_name, fused)
  shape = dict(global_batch_size=config.memory.batch_size, seq_len=config.memory.seq_len)
  if fused:
    return fused_step.fused_step_peak_bytes(model_config, optimizer, schedule, mesh, rules,
                                            max_grad_norm=config.opt.max_grad_norm, **shape)
  return memory.compiled_step_peak_bytes(model_config, optimizer, schedule, mesh, rules, **shape)


def _plot(summary: dict, path: str) -> None:
  fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
  for ax, (model, row) in zip(axes[0], summary.items()):
    names = list(row["peak_bytes"])
    ax.bar(names, [row["peak_bytes"][n] / 2**30 for n in names], color="tab:blue")
    ax.set_title(f"{model} ({row['num_params'] / 1e6:.0f}M params)")
    ax.set_xlabel("optimizer")
    ax.set_ylabel("compiled step peak per device (GiB)")
  plots.save_figure(fig, path)


def run(config, workdir: str) -> dict:
  """Measures every model x optimizer; writes the outputs and returns the summary."""
  outputs.write_config(config, workdir)
  writer = metrics.MetricWriter(workdir)
  summary = {}
  for index, model_name in enumerate(config.memory.models):
    row = {"num_params": _model_config(model_name).num_params(), "peak_bytes": {}}
    for opt_name in config.memory.optimizers:
      print(f"[memory] compiling {model_name} / {opt_name} ...", flush=True)
      row["peak_bytes"][opt_name] = peak_bytes(config, model_name, opt_name)
      print(f"[memory] {model_name} / {opt_name}: {row['peak_bytes'][opt_name] / 2**30:.3f} GiB",
            flush=True)
      writer.write(index, {"model": model_name, "optimizer": opt_name,
                           "peak_bytes": row["peak_bytes"][opt_name]})
    adamw = row["peak_bytes"].get("adamw")
    if adamw:
      row["ratio_to_adamw"] = {n: b / adamw for n, b in row["peak_bytes"].items()}
    summary[model_name] = row
  writer.close()
  summary = {"batch_size": config.memory.batch_size, "seq_len": config.memory.seq_len,
             "max_grad_norm": config.opt.max_grad_norm, "models": summary}
  outputs.write_summary(summary, workdir)
  _plot(summary["models"], os.path.join(workdir, "memory.png"))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("opt", "mesh", "sharding_rules", "memory")

if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False, reads=READS)
