r"""Import time, peak host memory and logit parity of a Hugging Face checkpoint.

  python -m experiments.hf_import --workdir=/tmp/hf_import          # random GPT-2 124M
  python -m experiments.hf_import --workdir=/tmp/hf_import --hf_dir=/path/to/model

Without --hf_dir, transformers (PyTorch, CPU: the test extra) saves a randomly initialised
GPT-2 124M-shaped model into WORKDIR/model first, in a child process, so that this process's
memory holds nothing of it. Then, in this process and in this order:

  read_s            reading every tensor of the directory into host numpy arrays with
                    safetensors (the I/O baseline; the arrays are dropped again)
  import_s          `hf.import_checkpoint` onto the mesh (data=1, fsdp=all devices), and
                    import_over_read = import_s / read_s
  peak_rss_increase the largest rise of this process's resident memory during the import, sampled
                    every 5 ms (parameters on CPU devices live in host memory too), and its ratio
                    to the parameter bytes; peak_anon_increase the same without file-backed
                    pages (the memory-mapped safetensors pages, which the OS can drop)
  export_s          `hf.export_checkpoint` of the imported parameters (float32, 2 GB shards)
  max_abs_logit_diff  against the transformers model loaded from the same directory, on
                    random tokens (float32)

Writes config.json (the flags), summary.json, metrics.jsonl (the memory samples) and rss.png
into the workdir.
"""

import json
import os
import subprocess
import sys
import threading
import time

import jax
import matplotlib.pyplot as plt
import numpy as np
import psutil
from absl import app, flags
from flax import nnx
from safetensors import safe_open

from bigmodel_jax import hf
from bigmodel_jax.train import builders, outputs, plots
from configs import default
from experiments import cli


def define_flags() -> None:
  """Defines the flags when this runs as a program (see cli.define_config_and_workdir)."""
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.DEFINE_string("hf_dir", None, "A Hugging Face directory; default: a random "
                      "GPT-2 124M saved into WORKDIR/model.")
  flags.DEFINE_integer("tokens", 64, "Sequence length of the parity check.")
  flags.mark_flags_as_required(["workdir"])

SAVE_RANDOM_GPT2 = """
import sys, torch, transformers
torch.manual_seed(0)
transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(
    sys.argv[1], max_shard_size="200MB")
"""


class RssSampler:
  """Samples this process's resident set size in a background thread."""

  def __init__(self, every_s: float = 0.005):
    self.every_s, self.samples, self._stop = every_s, [], threading.Event()
    self._process = psutil.Process()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    start = time.perf_counter()
    while not self._stop.is_set():
      info = self._process.memory_info()
      self.samples.append((time.perf_counter() - start, info.rss, info.rss - info.shared))
      time.sleep(self.every_s)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def read_all(directory: str) -> int:
  """Reads every tensor of a directory's safetensors files; returns the bytes read."""
  total = 0
  for name in sorted(os.listdir(directory)):
    if name.endswith(".safetensors"):
      with safe_open(os.path.join(directory, name), framework="numpy") as f:
        total += sum(f.get_tensor(key).nbytes for key in f.keys())  # noqa: SIM118
  return total


def parity(directory: str, graphdef, params, length: int) -> float:
  """Max |logit difference| against transformers' model of `directory` on random tokens."""
  import torch
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
  tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, length))
  with torch.no_grad():
    expected = model(torch.tensor(tokens)).logits.numpy()
  return float(np.abs(np.asarray(nnx.merge(graphdef, params)(tokens)) - expected).max())


def plot_rss(samples, baselines: tuple[int, int], path: str) -> None:
  """Resident memory (all, and anonymous only) over the import."""
  fig, ax = plt.subplots(figsize=(6, 3.5))
  times = [s[0] for s in samples]
  for column, label in ((1, "resident"), (2, "resident, anonymous (not file-backed)")):
    ax.plot(times, [(s[column] - baselines[column - 1]) / 2**20 for s in samples], label=label)
  plots.label_axes(ax, "seconds into the import", "resident memory increase (MiB)",
                   "host memory during hf.import_checkpoint", legend_fontsize=8)
  plots.save_figure(fig, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  workdir = flags.FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  directory = flags.FLAGS.hf_dir or os.path.join(workdir, "model")
  outputs.write_json(os.path.join(workdir, "config.json"),  # this experiment's flags
                     {"hf_dir": directory, "tokens": flags.FLAGS.tokens, "mesh": {"data": 1,
                                                                              "fsdp": -1}})
  if not flags.FLAGS.hf_dir and not os.path.isfile(os.path.join(directory, "config.json")):
    subprocess.run([sys.executable, "-c", SAVE_RANDOM_GPT2, directory], check=True)
  config = default.get_config()
  config.mesh.update(data=1, fsdp=-1)
  mesh, rules = builders.mesh_and_rules(config)

  start = time.perf_counter()
  checkpoint_bytes = read_all(directory)
  read_s = time.perf_counter() - start
  info = psutil.Process().memory_info()
  baseline, anon_baseline = info.rss, info.rss - info.shared
  with RssSampler() as sampler:
    start = time.perf_counter()
    model_config, graphdef, params = hf.import_checkpoint(directory, mesh, rules)
    jax.block_until_ready(params)
    import_s = time.perf_counter() - start
  peak_increase = max(s[1] for s in sampler.samples) - baseline
  peak_anon_increase = max(s[2] for s in sampler.samples) - anon_baseline
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  start = time.perf_counter()
  hf.export_checkpoint(os.path.join(workdir, "exported"), model_config, params,
                       max_shard_bytes=2 * 2**30)
  export_s = time.perf_counter() - start
  summary = {
      "hf_dir": directory, "devices": len(jax.devices()), "mesh": dict(mesh.shape),
      "num_params": model_config.num_params(), "param_bytes": param_bytes,
      "checkpoint_bytes": checkpoint_bytes, "read_s": read_s, "import_s": import_s,
      "import_over_read": import_s / read_s, "peak_rss_increase_bytes": peak_increase,
      "peak_rss_increase_over_param_bytes": peak_increase / param_bytes,
      "peak_anon_increase_bytes": peak_anon_increase,
      "peak_anon_increase_over_param_bytes": peak_anon_increase / param_bytes, "export_s": export_s,
      "max_abs_logit_diff": parity(directory, graphdef, params, flags.FLAGS.tokens),
  }
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for t, rss, anon in sampler.samples:
      f.write(json.dumps({"t_s": t, "rss_increase_bytes": rss - baseline,
                          "anon_increase_bytes": anon - anon_baseline}) + "\n")
  outputs.write_summary(summary, workdir)
  plot_rss(sampler.samples, (baseline, anon_baseline), os.path.join(workdir, "rss.png"))
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
