"""Two JAX processes (4 CPU devices each, over loopback) train like one process of 8 devices.

The two-process run resumes the single-process run's checkpoint of step 4, saved on a
data=2 x fsdp=4 mesh by one process, onto an fsdp=8 mesh spread over two processes, and trains to
step 8: per-process input sharding, collective orbax restores and saves across a change of mesh
and of process count, all in one launch (launches are slow on a 2-core machine).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigmodel_jax.train import checkpointing, metrics
from bigmodel_jax.train.loop import train_and_evaluate
from tests import test_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return test_loop.write_corpus(tmp_path_factory.mktemp("corpus"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _config_file(config, path) -> str:
  """A config file for `python -m experiments.pretrain --config=...` that returns `config`."""
  (path / "config.json").write_text(config.to_json())
  source = f"open({str(path / 'config.json')!r}).read()"
  (path / "config.py").write_text(
      "import json\nimport ml_collections\n\n\ndef get_config():\n"
      f"  return ml_collections.ConfigDict(json.loads({source}))\n")
  return str(path / "config.py")


def launch(config_file: str, workdir: str, num_processes: int, *overrides: str,
           timeout: int = 600) -> list[subprocess.CompletedProcess]:
  """Runs experiments.pretrain as `num_processes` local JAX processes of 4 CPU devices each."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.pretrain", f"--config={config_file}",
       f"--workdir={workdir}", "--config.distributed.initialize=True",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       f"--config.distributed.num_processes={num_processes}",
       f"--config.distributed.process_id={i}", "--config.distributed.cpu_devices_per_process=4",
       *overrides], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(num_processes)]
  outputs = []
  try:
    for proc in procs:
      out, _ = proc.communicate(timeout=timeout)
      outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return outputs


def test_two_processes_resume_onto_another_mesh_and_match_one_process(corpus, tmp_path):
  config = test_loop._config(corpus, tmp_path)  # data=2 x fsdp=4, checkpoints at 4 and 8
  single = str(tmp_path / "single")
  single_summary = train_and_evaluate(config, single)
  multi = str(tmp_path / "multi")
  shutil.copytree(single, multi, ignore=shutil.ignore_patterns("8", "summary.json"))
  results = launch(_config_file(config, tmp_path), multi, 2, "--config.mesh.data=1",
                   "--config.mesh.fsdp=8")
  for i, result in enumerate(results):
    assert result.returncode == 0, f"process {i}:\n{result.stdout[-4000:]}"
  assert "resumed from step 4" in results[0].stdout
  assert "resumed from step 4" not in results[1].stdout  # only process 0 prints
  with open(os.path.join(multi, "summary.json")) as f:
    multi_summary = json.load(f)
  assert multi_summary["devices"] == 8
  # The same program on the same data; only the order of cross-device sums differs (gloo
  # between processes), by float32 rounding. AdamW turns the rounding noise of gradients that are
  # identically zero in exact arithmetic (GPT-2's key bias: softmax is shift-invariant) into
  # eps-limited steps of ~1e-6, hence atol 1e-5 (as in tests/test_train_step.py).
  assert multi_summary["final_eval_loss_nats_per_token"] == pytest.approx(
      single_summary["final_eval_loss_nats_per_token"], rel=1e-6)
  expected, actual = (checkpointing.load_state_on_host(os.path.join(w, "checkpoints"), 8)
                      for w in (single, multi))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), actual,
               expected)
  last = [r for r in metrics.read_metrics(multi) if r["step"] == 8 and "loss" in r][-1]
  assert last["skipped_steps"] == 0
