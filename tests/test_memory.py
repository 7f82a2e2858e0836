"""experiments.memory: exact state bytes without allocation, and the compiled step's peak."""

import json
import os
import subprocess
import sys

import pytest

from bigmodel_jax import rl, sharding
from bigmodel_jax.models.sampling import SamplingOptions
from bigmodel_jax.rl import memory as rl_mem
from bigmodel_jax.train import builders, memory
from bigmodel_jax.train.optimizers import make_optimizer
from configs import gpt2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_memory_tool(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "experiments.memory", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_llama2_7b_state_bytes_without_allocating():
  result = _run_memory_tool("--config=configs/llama.py:llama2-7b", "--optimizers=adamw,sgd")
  n = 6_738_415_616
  assert result["num_params"] == n
  assert result["param_bytes"] == 4 * n
  # AdamW: m and v in float32 (53.9 GB, the Adam-mini paper's 53.92 GB) plus two int32 step
  # counts (Adam's and the schedule's); SGD: one momentum buffer.
  assert result["optimizers"]["adamw"] == {"state_bytes": 8 * n + 8, "step_peak_bytes": None}
  assert result["optimizers"]["sgd"]["state_bytes"] == 4 * n + 4


def test_every_factory_optimizer_is_accepted_and_compiles():
  result = _run_memory_tool("--config=configs/gpt2.py:tiny", "--compile",
                            "--config.train.global_batch_size=2")
  assert set(result["optimizers"]) >= {"adamw", "sgd", "adafactor", "lion"}
  for name, figures in result["optimizers"].items():
    assert figures["step_peak_bytes"] > result["param_bytes"], name


def test_unknown_optimizer_is_a_usage_error():
  env = dict(os.environ, XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-m", "experiments.memory", "--config=configs/gpt2.py:tiny",
                        "--optimizers=adamw,adamx"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode != 0 and "adamx" in out.stderr


@pytest.mark.parametrize("name, ratio", [("adamw", 2.0), ("sgd", 1.0)])
def test_state_bytes_relative_to_params(name, ratio):
  config = gpt2.get_config("tiny")
  config.opt.name = name
  mesh, rules = builders.mesh_and_rules(config)
  optimizer, _ = make_optimizer(config.opt, config.train.steps)
  model_config = builders.model_config(config.model, 257)
  _, param_bytes, state_bytes = memory.state_bytes(model_config, optimizer, mesh, rules)
  assert state_bytes == pytest.approx(ratio * param_bytes, abs=8)
  assert sharding.data_parallel_size(mesh) == 8


def test_rl_state_is_sized_with_the_configs_optimizer_and_says_which():
  result = _run_memory_tool("--config=configs/gpt2.py:tiny", "--optimizers=adamw,sgd",
                            "--rl_methods=remax")
  config = gpt2.get_config("tiny")
  optimizer, _ = make_optimizer(config.opt, config.train.steps)  # adamw, not the last listed
  model_config = builders.model_config(config.model, 257)
  expected = rl_mem.method_memory("remax", model_config, optimizer, rl.RLOptions(
      SamplingOptions(max_new_tokens=config.data.seq_len - config.data.seq_len // 2),
      samples_per_prompt=2), batch_size=config.train.global_batch_size,
      prompt_len=config.data.seq_len // 2, compile_step=False)
  assert result["rl_optimizer"] == "adamw"
  assert result["rl_methods"]["remax"]["state_bytes"] == expected["state_bytes"]
