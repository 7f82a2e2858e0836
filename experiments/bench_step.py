r"""Train-step throughput against nanoGPT's, side by side: `python -m experiments.bench_step
--config=configs/bench_step.py --workdir=/tmp/bench_step`.

For each (context, batch) shape of `bench.shapes`, in one process, on one device:

  - pipeline: the project's input pipeline alone (`next()` of the `make pretrain` iterator);
  - step: the project's jitted train step (train/step.py, the state donated, as in the loop) on
    one batch already on the device, `bench.steps` steps then `block_until_ready`;
  - loop: pipeline + transfer + step, the work of train/loop.py's inner loop;
  - nanogpt: nanoGPT's PyTorch training step (experiments/nanogpt_reference.py) at the same
    model, vocabulary, batch and optimizer, at its fastest thread count of `bench.torch_threads`
    (chosen per shape before the rounds).

The step and nanoGPT alternate over `bench.rounds` rounds (after `bench.warmup` untimed steps
each, then `bench.settle_s` seconds idle, so that neither is timed while the other's worker
threads still spin); the figures are medians over rounds, and `ratio` = project tokens/s /
nanoGPT tokens/s (both steps alone; `loop_ratio` with the pipeline). Each compiled step is also
profiled (experiments/xla_cpu_profile.py): its thunks by opcode and XLA's flop count, and from a
`jax.profiler` trace of `bench.profile_steps` steps the thread time of the matmul thunks against
all the others, with the costliest of those named; and the step's matmul, GELU and attention
one at a time against PyTorch's (experiments/op_timings.py).

Writes config.json, metrics.jsonl (one row per round and shape), summary.json and
tokens_per_s.png into the workdir (and the profiler traces into workdir/trace/).
"""

import os
import statistics
import time

import jax
import ml_collections
import numpy as np
import torch
import tqdm
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import sharding
from bigmodel_jax.train import builders, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.metrics import MetricWriter
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.state import init_train_state
from bigmodel_jax.train.step import make_train_step
from experiments import cli, op_timings, xla_cpu_profile
from experiments.nanogpt_reference import NanoGPT, make_step


def shape_config(config: ml_collections.ConfigDict, seq_len: int, batch: int
                 ) -> ml_collections.ConfigDict:
  """`config` at one (context, batch) shape: the model's context is the sequence length."""
  return derive(config, values={"data.seq_len": seq_len, "model.max_seq_len": seq_len,
                                "train.global_batch_size": batch})


class ProjectStep:
  """The project's compiled train step at one shape, with its state and one device batch."""

  def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, first_batch: dict):
    mesh = sharding.make_mesh(dict(config.mesh), devices=jax.devices()[:1])
    model_config = builders.model_config(config.model, vocab_size)
    self.num_params = model_config.num_params()
    optimizer, schedule = make_optimizer(config.opt, config.train.steps)
    graphdef, self.state, shardings = init_train_state(model_config, optimizer, mesh,
                                                       builders.sharding_rules(config), config.seed)
    self.batch_sharding = sharding.batch_sharding(mesh)
    self.step = jax.jit(make_train_step(graphdef, optimizer, schedule),
                        in_shardings=(shardings, self.batch_sharding),
                        out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
                        donate_argnums=0)
    self.batch = self.put(first_batch)
    self.compiled = self.step.lower(self.state, self.batch).compile()

  def put(self, batch: dict) -> dict:
    return jax.device_put(batch, self.batch_sharding)

  def run(self, steps: int, batches=None) -> float:
    """Seconds for `steps` steps (on `batches`' next batches if given), blocking at the end."""
    start = time.perf_counter()
    metrics = None
    for _ in range(steps):
      batch = self.put(next(batches)) if batches is not None else self.batch
      self.state, metrics = self.step(self.state, batch)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start


def nanogpt_step(config: ml_collections.ConfigDict, vocab_size: int, batch: dict):
  """nanoGPT's step at `config`'s shape and its (inputs, targets) as torch tensors."""
  torch.manual_seed(config.seed)
  m = config.model
  model = NanoGPT(vocab_size, config.data.seq_len, m.num_layers, m.num_heads, m.embed_dim)
  step = make_step(model, lr=config.opt.lr, weight_decay=config.opt.weight_decay)
  inputs = torch.from_numpy(np.asarray(batch["inputs"], np.int64))
  targets = torch.from_numpy(np.asarray(batch["targets"], np.int64))
  return step, inputs, targets, sum(p.numel() for p in model.parameters())


def _time_torch(step, inputs, targets, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    step(inputs, targets)
  return time.perf_counter() - start


def settle(seconds: float) -> None:
  """Waits for the other framework's worker threads to stop spinning.

  XLA's and PyTorch's (OpenMP) thread pools busy-wait for a while after their last task; timing
  one right after the other would charge it the other's spinning.
  """
  time.sleep(seconds)


def fastest_threads(step, inputs, targets, candidates, steps: int, settle_s: float) -> int:
  """The torch thread count of `candidates` with the shortest time for `steps` steps (best of
  two interleaved trials each)."""
  times = {threads: float("inf") for threads in candidates}
  for _ in range(2):
    for threads in candidates:
      torch.set_num_threads(threads)
      _time_torch(step, inputs, targets, 2)
      settle(settle_s)
      times[threads] = min(times[threads], _time_torch(step, inputs, targets, steps))
  return min(times, key=times.get)


def time_pipeline(iterator, batches: int) -> float:
  """Seconds per batch of the input pipeline alone (after one untimed batch)."""
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return (time.perf_counter() - start) / batches


def bench_shape(config: ml_collections.ConfigDict, writer: MetricWriter, bar, trace_dir: str
                ) -> dict:
  """Every figure of one shape (see the module docstring); the profiler trace goes to
  `trace_dir`."""
  bench = config.bench
  data = builders.make_data(config)
  vocab_size = data.tokenizer.vocab_size
  iterator = data.train_iterator()
  project = ProjectStep(config, vocab_size, next(iterator))
  step, inputs, targets, torch_params = nanogpt_step(config, vocab_size,
                                                     jax.device_get(project.batch))
  threads = fastest_threads(step, inputs, targets, tuple(bench.torch_threads),
                            max(bench.steps // 2, 1), bench.settle_s)
  torch.set_num_threads(threads)
  tokens = config.train.global_batch_size * config.data.seq_len * bench.steps
  shape = f"{config.data.seq_len}x{config.train.global_batch_size}"
  rounds = []
  for r in range(bench.rounds):
    project.run(bench.warmup)
    settle(bench.settle_s)
    step_s = project.run(bench.steps)
    project.run(bench.warmup, iterator)
    settle(bench.settle_s)
    loop_s = project.run(bench.steps, iterator)
    _time_torch(step, inputs, targets, bench.warmup)
    settle(bench.settle_s)
    torch_s = _time_torch(step, inputs, targets, bench.steps)
    row = {"shape": shape, "round": r, "step_tokens_per_s": tokens / step_s,
           "loop_tokens_per_s": tokens / loop_s, "nanogpt_tokens_per_s": tokens / torch_s,
           "ratio": torch_s / step_s, "loop_ratio": torch_s / loop_s}
    writer.write(r, row)
    rounds.append(row)
    bar.update(1)
  median = {k: statistics.median(row[k] for row in rounds)
            for k in rounds[0] if k not in ("shape", "round")}
  return {"seq_len": config.data.seq_len, "batch": config.train.global_batch_size,
          "num_params": project.num_params, "nanogpt_num_params": torch_params,
          "nanogpt_threads": threads,
          "pipeline_ms_per_batch": 1e3 * time_pipeline(iterator, bench.pipeline_batches),
          **median, "ratio_per_round": [row["ratio"] for row in rounds],
          "profile": xla_cpu_profile.static_summary(project.compiled),
          "runtime_profile": xla_cpu_profile.runtime_summary(
              project.run, bench.profile_steps, project.compiled, trace_dir),
          "op_ratios": op_timings.op_ratios(
              config.train.global_batch_size * config.data.seq_len, config.model.embed_dim,
              config.model.num_heads, config.data.seq_len, bench.rounds, bench.op_repeats)}


def plot_throughput(shapes: dict, path: str) -> None:
  """Bars of tokens/s per shape: project step, project loop, nanoGPT."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  names = list(shapes)
  series = (("step_tokens_per_s", "project step"), ("loop_tokens_per_s", "project loop"),
            ("nanogpt_tokens_per_s", "nanoGPT (PyTorch)"))
  fig, ax = plt.subplots(figsize=(6, 4))
  x = np.arange(len(names))
  for i, (key, label) in enumerate(series):
    ax.bar(x + (i - 1) * 0.27, [shapes[n][key] for n in names], width=0.27, label=label)
  ax.set_xticks(x, [f"context {shapes[n]['seq_len']}, batch {shapes[n]['batch']}" for n in names])
  plots.label_axes(ax, "", "tokens / s (median of rounds)", "train-step throughput")
  plots.save_figure(fig, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Benchmarks every shape of `config.bench.shapes`; writes and returns the summary."""
  outputs.write_config(config, workdir)
  writer = MetricWriter(workdir)
  shapes = {}
  with tqdm.tqdm(total=len(config.bench.shapes) * config.bench.rounds, desc="rounds") as bar:
    for seq_len, batch in config.bench.shapes:
      name = f"{seq_len}x{batch}"
      shapes[name] = bench_shape(shape_config(config, seq_len, batch), writer, bar,
                                 os.path.join(workdir, "trace", name))
  writer.close()
  summary = {"shapes": shapes, "backend": jax.default_backend(),
             "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "versions": outputs.package_versions()}
  outputs.write_summary(summary, workdir)
  plot_throughput(shapes, os.path.join(workdir, "tokens_per_s.png"))
  return summary


# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("seed", "model", "data", "train", "opt", "mesh", "sharding_rules", "bench")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  for name, shape in summary["shapes"].items():
    print(f"{name}: project {shape['step_tokens_per_s']:,.0f} tokens/s (loop "
          f"{shape['loop_tokens_per_s']:,.0f}), nanoGPT {shape['nanogpt_tokens_per_s']:,.0f} "
          f"({shape['nanogpt_threads']} threads): ratio {shape['ratio']:.2f}; "
          f"{shape['profile']['thunks']} thunks per step")


if __name__ == "__main__":
  cli.define_config_and_workdir("configs/bench_step.py[:small]")
  cli.run(main, reads=READS)
