"""The pre-training loop end to end: outputs, exact resume, refused checkpoints, golden metrics."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigmodel_jax.train import builders, checkpointing, flops, metrics
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.fused_step import fused_step
from bigmodel_jax.train.loop import train_and_evaluate
from configs import default

# A deterministic corpus (so the golden figures do not depend on the Python install).
_WORDS = ("def", "return", "class", "import", "lambda", "yield", "self", "value", "index",
          "token", "block", "layer", "while", "for", "in", "if", "else", "elif", "try", "except",
          "with", "as", "pass")


def write_corpus(root):
  """Writes the test corpus (40 small .py files) into `root` and returns it."""
  rng = np.random.default_rng(0)
  for i in range(40):
    lines = [" ".join(rng.choice(_WORDS, size=8)) for _ in range(30)]
    (root / f"doc_{i:02d}.py").write_text("\n".join(lines) + "\n")
  return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus"))


def _config(corpus, tmp_path, steps=8):
  c = default.get_config()
  c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, embed_dim=32,
                 mlp_dim=64, max_seq_len=32)
  c.data.update(text_globs=(str(corpus / "*.py"),), seq_len=32, data_dir=str(tmp_path / "tfds"),
                validation_fraction=0.2)
  c.train.update(steps=steps, global_batch_size=8, log_every=2, eval_every=4, eval_batches=2,
                 checkpoint_every=4, keep_checkpoints=5, peak_flops_per_device=1e9)
  c.opt.update(warmup_steps=2, lr=1e-2)
  c.mesh.update(data=2, fsdp=4)
  return c


def _params_at(workdir, step):
  manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints"), max_to_keep=5,
                                       async_save=False)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.device_get(restored["state"])


def test_pretrain_writes_every_output_and_learns(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(_config(corpus, tmp_path), workdir)
  for name in ("config.json", "metrics.jsonl", "summary.json", "loss.png", "tensorboard"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  rows = metrics.read_metrics(workdir)
  train_losses = [r["loss"] for r in rows if "loss" in r]
  assert train_losses[-1] < train_losses[0]
  assert {"grad_norm", "lr", "tokens_per_s", "model_flops_per_s"} <= set(rows[0])
  assert summary["final_eval_bits_per_byte"] == pytest.approx(
      summary["final_eval_loss"] / math.log(2) / summary["eval_bytes_per_token"])
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["steps"] == 8
  assert len(summary["samples"]) == 3 and all(isinstance(t, str) for t in summary["samples"])
  assert summary["eval_tokens"] == 2 * 8 * 32  # train.eval_batches full batches of seq_len
  model_config = builders.model_config(_config(corpus, tmp_path).model, 257)
  assert summary["mfu"] == pytest.approx(  # the configured peak: 1e9 FLOP/s per device
      summary["tokens_per_s"] * flops.flops_per_token(model_config, 32) / (1e9 * 8))
  assert summary["device_peak_bytes"] is None  # the CPU keeps no memory statistics
  assert summary["data"]["validation"]["fingerprint"].endswith("/validation")
  assert summary["data"]["train"]["records"] > 0 and summary["data"]["train"]["bytes"] > 0
  assert summary["versions"]["jax"] == jax.__version__


def test_golden_metrics(corpus, tmp_path):
  """Catches silent changes to the model, data order, optimizer or loss (nanodo-style)."""
  summary = train_and_evaluate(_config(corpus, tmp_path, steps=8), str(tmp_path / "run"))
  rows = metrics.read_metrics(str(tmp_path / "run"))
  first_loss = next(r["loss"] for r in rows if "loss" in r)
  assert first_loss == pytest.approx(GOLDEN["first_logged_train_loss"], rel=2e-3)
  assert summary["final_eval_loss"] == pytest.approx(
      GOLDEN["final_eval_loss"], rel=2e-3)


GOLDEN = {"first_logged_train_loss": 5.5261, "final_eval_loss": 3.8572}


def test_stop_and_resume_is_bit_identical(corpus, tmp_path):
  config = _config(corpus, tmp_path)
  uninterrupted = str(tmp_path / "uninterrupted")
  train_and_evaluate(config, uninterrupted)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(uninterrupted, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))  # as if stopped after step 4
  train_and_evaluate(config, resumed)
  expected, actual = _params_at(uninterrupted, 8), _params_at(resumed, 8)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


def test_incompatible_checkpoint_is_refused_naming_the_key(corpus, tmp_path):
  config = _config(corpus, tmp_path, steps=4)
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(config, workdir)
  files = {}
  for name in ("summary.json", "config.json"):
    with open(os.path.join(workdir, name)) as f:
      files[name] = f.read()
  assert train_and_evaluate(config, workdir) == summary  # a finished run: its summary is kept
  config.model.num_layers = 3
  config.train.steps = 8
  with pytest.raises(ValueError, match=r"model\.num_layers: checkpoint 2 != config 3"):
    train_and_evaluate(config, workdir)
  for name, text in files.items():  # neither the rerun nor the refused resume rewrote them
    with open(os.path.join(workdir, name)) as f:
      assert f.read() == text, name


def test_partially_written_checkpoint_is_never_the_latest(corpus, tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(_config(corpus, tmp_path, steps=4), workdir)
  # What an interrupted orbax save leaves behind: a step directory still under its tmp name.
  os.makedirs(os.path.join(workdir, "checkpoints", "8.orbax-checkpoint-tmp-1234", "state"))
  manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints"), max_to_keep=5)
  assert manager.latest_step() == 4


def test_unknown_dataset_names_the_key(corpus, tmp_path):
  config = _config(corpus, tmp_path)
  config.data.name = "no_such_dataset"
  with pytest.raises(ValueError, match="data.name"):
    train_and_evaluate(config, str(tmp_path / "run"))


def test_resume_onto_another_mesh(corpus, tmp_path):
  config = _config(corpus, tmp_path)
  uninterrupted = str(tmp_path / "uninterrupted")
  train_and_evaluate(config, uninterrupted)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(uninterrupted, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  config.mesh.update(data=1, fsdp=4, tensor=2)  # saved on data=2 x fsdp=4
  train_and_evaluate(config, resumed)
  expected, actual = _params_at(uninterrupted, 8), _params_at(resumed, 8)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), actual,
               expected)


def test_pretrain_command_line_with_overrides(corpus, tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path / "cli"
  command = [
      sys.executable, "-m", "experiments.pretrain", "--config=configs/gpt2.py:tiny",
      f"--workdir={workdir}", "--config.train.steps=4", "--config.opt.lr=3e-4",
      "--config.opt.warmup_steps=1", "--config.train.global_batch_size=4",
      "--config.data.seq_len=32", "--config.model.max_seq_len=32",
      f"--config.data.text_globs=('{corpus}/*.py',)", f"--config.data.data_dir={tmp_path}/tfds",
      "--config.data.validation_fraction=0.2",
  ]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  out = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "config.json") as f:
    assert json.load(f)["opt"]["lr"] == 3e-4
  with open(workdir / "summary.json") as f:
    assert json.load(f)["steps"] == 4


def test_trainer_logs_block_top_eigenvalues(corpus, tmp_path):
  config = _config(corpus, tmp_path, steps=4)
  config.train.update(hessian_every=2, hessian_lanczos_steps=5,
                      hessian_blocks=("attn/query/kernel", "mlp/up/kernel"))
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  rows = [r for r in metrics.read_metrics(workdir) if any(k.startswith("hessian/") for k in r)]
  assert [r["step"] for r in rows] == [0, 2]
  values = {k: v for k, v in rows[0].items() if k.startswith("hessian/top_eig/")}
  assert len(values) == 4  # two tensors x two layers
  assert all(math.isfinite(v) and v > 0 for v in values.values()), values
  config.train.hessian_blocks = ("no/such/kernel",)
  with pytest.raises(ValueError, match="train.hessian_blocks"):
    train_and_evaluate(config, str(tmp_path / "other"))
  # a step whose optimizer does not see the whole gradient (the fused one) cannot run the monitor
  config.train.hessian_blocks = ("attn/query/kernel",)
  config.opt.max_grad_norm = 0.0
  with pytest.raises(ConfigError, match="train.hessian_every"):
    train_and_evaluate(config, str(tmp_path / "fused"), fused_step(0.0))
