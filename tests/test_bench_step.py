"""experiments/bench_step.py (train step against nanoGPT) end to end on a tiny corpus, the
nanoGPT reference model, and experiments/bench_gpu.py's refusal to run without a GPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from configs import bench_step as bench_step_config
from experiments import bench_step
from experiments.nanogpt_reference import NanoGPT, make_step
from tests.test_loop import write_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_small_benchmark_writes_every_output(tmp_path):
  config = bench_step_config.get_config("small")
  (tmp_path / "corpus").mkdir()
  config.data.update(text_globs=(str(write_corpus(tmp_path / "corpus") / "*.py"),),
                     data_dir=str(tmp_path / "tfds"), validation_fraction=0.2)
  summary = bench_step.run(config, str(tmp_path / "run"))
  for name in ("config.json", "metrics.jsonl", "summary.json", "tokens_per_s.png"):
    assert os.path.getsize(tmp_path / "run" / name) > 0, name
  shape = summary["shapes"]["64x12"]
  assert shape["num_params"] == shape["nanogpt_num_params"]  # the same model
  assert shape["ratio"] == np.median(shape["ratio_per_round"])
  assert shape["ratio"] > 0 and shape["nanogpt_threads"] in config.bench.torch_threads
  assert shape["profile"]["thunks"] == sum(shape["profile"]["by_opcode"].values()) > 0
  assert shape["profile"]["flops"] > 0
  runtime = shape["runtime_profile"]
  assert runtime["matmul_thread_ms"] > 0 and runtime["other_thread_ms"] > 0
  assert runtime["thunk_thread_ms"] == pytest.approx(runtime["matmul_thread_ms"]
                                                     + runtime["other_thread_ms"])
  assert len(runtime["top_other"]) == 8
  assert set(shape["op_ratios"]) == {"matmul", "gelu_tanh_fwd_bwd", "causal_attention_fwd_bwd"}
  assert all(op["ratio"] > 0 for op in shape["op_ratios"].values())
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  assert len(rows) == config.bench.rounds


def test_nanogpt_reference_learns_and_has_gpt2_parameter_count():
  torch.manual_seed(0)
  model = NanoGPT(vocab_size=257, seq_len=16, layers=2, heads=2, width=32)
  # GPT-2's count: embeddings + per block 12 d^2 + 13 d (biases and norms) + final norm
  d = 32
  expected = (257 + 16) * d + 2 * (12 * d * d + 13 * d) + 2 * d
  assert sum(p.numel() for p in model.parameters()) == expected
  step = make_step(model, lr=1e-2)
  tokens = torch.randint(0, 257, (4, 17))
  losses = [step(tokens[:, :-1], tokens[:, 1:]) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]


def test_bench_gpu_refuses_to_run_on_a_cpu(tmp_path):
  result = subprocess.run([sys.executable, "-m", "experiments.bench_gpu",
                           f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
  assert result.returncode == 1
  assert result.stderr.strip().startswith("error: make bench-gpu needs a GPU")
  assert "jax[cuda12]" in result.stderr and "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)
