"""Two JAX processes (4 CPU devices each, over loopback) train like one process of 8 devices.

The two-process run resumes the single-process run's checkpoint of step 4, saved on a
data=2 x fsdp=4 mesh by one process, onto an fsdp=8 mesh spread over two processes, and trains to
step 8: per-process input sharding, collective orbax restores and saves across a change of mesh
and of process count, all in one launch (launches are slow on a 2-core machine).
"""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from bigmodel_jax.train import checkpointing, metrics
from bigmodel_jax.train.loop import train_and_evaluate
from experiments import soak
from tests import test_loop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return test_loop.write_corpus(tmp_path_factory.mktemp("corpus"))


def test_two_processes_resume_onto_another_mesh_and_match_one_process(corpus, tmp_path):
  config = test_loop._config(corpus, tmp_path)  # data=2 x fsdp=4, checkpoints at 4 and 8
  single = str(tmp_path / "single")
  single_summary = train_and_evaluate(config, single)
  multi = str(tmp_path / "multi")
  shutil.copytree(single, multi, ignore=shutil.ignore_patterns("8", "summary.json"))
  config.mesh.update(data=1, fsdp=8)
  log = str(tmp_path / "process")
  procs = soak.launch(soak.write_config_file(config, str(tmp_path)), multi, 2, log_path=log)
  try:
    codes = [proc.wait(timeout=600) for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  outputs = [pathlib.Path(f"{log}.{i}").read_text() for i in range(2)]
  for i, (code, out) in enumerate(zip(codes, outputs)):
    assert code == 0, f"process {i}:\n{out[-4000:]}"
  assert "resumed from step 4" in outputs[0]
  assert "resumed from step 4" not in outputs[1]  # only process 0 prints
  with open(os.path.join(multi, "summary.json")) as f:
    multi_summary = json.load(f)
  assert multi_summary["devices"] == 8
  # The same program on the same data; only the order of cross-device sums differs (gloo
  # between processes), by float32 rounding. AdamW turns the rounding noise of gradients that are
  # identically zero in exact arithmetic (GPT-2's key bias: softmax is shift-invariant) into
  # eps-limited steps of ~1e-6, hence atol 1e-5 (as in tests/test_train_step.py).
  assert multi_summary["final_eval_loss"] == pytest.approx(
      single_summary["final_eval_loss"], rel=1e-6)
  expected, actual = (checkpointing.load_state_on_host(os.path.join(w, "checkpoints"), 8)
                      for w in (single, multi))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), actual,
               expected)
  last = [r for r in metrics.read_metrics(multi) if r["step"] == 8 and "loss" in r][-1]
  assert last["skipped_steps"] == 0
