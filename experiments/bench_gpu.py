r"""`make bench-gpu`: GPT-2 124M throughput, MFU and memory per optimizer on one GPU.

  python -m experiments.bench_gpu --workdir=runs/bench_gpu [--optimizers=adamw,adam_mini,mofo]

Each optimizer trains configs/bench_gpu.py (GPT-2 124M, bfloat16 compute, 300 steps of 32 x 1024
tokens) through `experiments.pretrain` in its own process, so that each device memory peak is its
own. From each run's summary.json: tokens/s and MFU over the timed steps (the first logging
window, which holds the compilation, is not timed), the step time, and the device's peak memory;
from `experiments.memory --compile` the exact optimizer-state bytes and XLA's peak for the step.
The MFU is against the dense bf16 peak of bigmodel_jax/train/flops.py's table (or
`--peak_flops`).

Without a GPU it stops at once with a message saying what to install: it never falls back to the
CPU (a CPU run of this size would take hours and measure nothing of interest).

Writes config.json (the flags), metrics.jsonl (one row per optimizer), summary.json and
bench_gpu.png into the workdir, and each optimizer's run into workdir/<name>/.
"""

import json
import os
import subprocess
import sys

import jax
import matplotlib
from absl import app, flags

from bigmodel_jax.train import outputs, plots
from bigmodel_jax.train.metrics import MetricWriter
from configs import bench_gpu as bench_gpu_config
from experiments import cli

CONFIG = "configs/bench_gpu.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags() -> None:
  """Defines the flags when this runs as a program (see cli.define_config_and_workdir)."""
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.DEFINE_list("optimizers", ["adamw", "adam_mini", "mofo"], "Optimizers to train.")
  flags.DEFINE_float("peak_flops", None, "Peak FLOP/s of the device (default: the table).")
  flags.mark_flags_as_required(["workdir"])


def require_gpu() -> None:
  """Stops with one `error:` line when JAX sees no GPU."""
  if jax.default_backend() != "gpu":
    cli.fail(f"make bench-gpu needs a GPU, but JAX sees only {jax.default_backend()} devices "
             f"({jax.devices()[0].device_kind}). On a CUDA machine install JAX's GPU build into "
             "the project's environment first: .venv/bin/pip install -U 'jax[cuda12]'")


def _python(module: str, *args: str) -> subprocess.CompletedProcess:
  command = [sys.executable, "-m", module, f"--config={CONFIG}", *args]
  print("$", " ".join(command), flush=True)
  return subprocess.run(command, cwd=REPO, check=True, capture_output=module.endswith("memory"),
                        text=True)


def bench_optimizer(name: str, workdir: str, peak_flops: float | None) -> dict:
  """Trains with optimizer `name`; returns its figures."""
  run_dir = os.path.join(workdir, name)
  overrides = [f"--config.opt.name={name}"]
  if peak_flops:
    overrides.append(f"--config.train.peak_flops_per_device={peak_flops}")
  _python("experiments.pretrain", f"--workdir={run_dir}", *overrides)
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  memory = json.loads(_python("experiments.memory", f"--optimizers={name}", "--compile"
                              ).stdout.strip().splitlines()[-1])
  config = bench_gpu_config.get_config()
  tokens_per_step = config.train.global_batch_size * config.data.seq_len
  return {"optimizer": name, "tokens_per_s": summary["tokens_per_s"],
          "step_time_s": tokens_per_step / summary["tokens_per_s"], "mfu": summary["mfu"],
          "device_peak_bytes": summary["device_peak_bytes"],
          "state_bytes": memory["optimizers"][name]["state_bytes"],
          "step_peak_bytes": memory["optimizers"][name]["step_peak_bytes"],
          "final_eval_loss": summary["final_eval_loss"],
          "device_kind": summary["device_kind"]}


def plot_bench(rows: list[dict], path: str) -> None:
  """Tokens/s and device peak memory per optimizer."""
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  names = [r["optimizer"] for r in rows]
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
  left.bar(names, [r["tokens_per_s"] for r in rows])
  plots.label_axes(left, "optimizer", "tokens / s", "GPT-2 124M, bf16")
  right.bar(names, [(r["device_peak_bytes"] or 0) / 2**30 for r in rows])
  plots.label_axes(right, "optimizer", "device peak memory (GiB)", "memory")
  plots.save_figure(fig, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  require_gpu()
  workdir = flags.FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  outputs.write_json(os.path.join(workdir, "config.json"),
                     {"config": CONFIG, "optimizers": flags.FLAGS.optimizers,
                      "peak_flops": flags.FLAGS.peak_flops})
  writer = MetricWriter(workdir)
  rows = []
  for i, name in enumerate(flags.FLAGS.optimizers):
    rows.append(bench_optimizer(name, workdir, flags.FLAGS.peak_flops))
    writer.write(i, rows[-1])
  writer.close()
  outputs.write_summary({"optimizers": {r["optimizer"]: r for r in rows},
                         "versions": outputs.package_versions()}, workdir)
  plot_bench(rows, os.path.join(workdir, "bench_gpu.png"))
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
