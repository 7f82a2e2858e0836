"""Faults the trainer survives: damaged checkpoints, SIGTERM, non-finite steps, unwritable disks."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from absl import logging

from bigmodel_jax.train import builders, checkpointing, loop, metrics, nonfinite
from bigmodel_jax.train.loop import train_and_evaluate
from bigmodel_jax.train.preemption import Preempted
from bigmodel_jax.train.state import init_train_state
from bigmodel_jax.train.step import make_train_step
from tests import test_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return test_loop.write_corpus(tmp_path_factory.mktemp("corpus"))


def _config(corpus, tmp_path):
  """test_loop's tiny 8-step run, checkpointed every 2 steps."""
  config = test_loop._config(corpus, tmp_path)
  config.train.checkpoint_every = 2
  return config


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
  """An uninterrupted 8-step run with checkpoints at steps 2, 4, 6 and 8."""
  root = tmp_path_factory.mktemp("reference")
  config = _config(corpus, root)
  train_and_evaluate(config, str(root / "run"))
  return config, str(root / "run")


def _state(workdir, step):
  return checkpointing.load_state_on_host(os.path.join(workdir, "checkpoints"), step)


def _assert_bit_identical(actual, expected):
  def check(path, a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)

  jax.tree_util.tree_map_with_path(check, actual, expected)


def _array_files(step_dir):
  return sorted(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
                key=os.path.getsize)


def test_nonfinite_step_leaves_state_bitwise_unchanged(corpus, tmp_path):
  config = _config(corpus, tmp_path)
  mesh, rules = builders.mesh_and_rules(config)
  model_config = builders.model_config(config.model, 257)
  optimizer, schedule = optax.adamw(1e-2), optax.constant_schedule(1e-2)
  graphdef, state, _ = init_train_state(model_config, optimizer, mesh, rules, seed=0)
  state = state._replace(params={**state.params, "final_norm": {
      **state.params["final_norm"], "bias": state.params["final_norm"]["bias"].at[0].set(-0.0)}})
  step = jax.jit(make_train_step(graphdef, optimizer, schedule))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 257, size=(8, 33), dtype=np.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((8, 32))}
  before = jax.device_get(state)
  good, good_metrics = step(state, batch)
  bad, bad_metrics = step(state, {**batch, "weights": np.full((8, 32), np.nan)})
  assert bool(good_metrics["finite"]) and not bool(bad_metrics["finite"])
  assert not np.array_equal(good.params["embed"]["embedding"], before.params["embed"]["embedding"])
  after = jax.device_get(bad)
  _assert_bit_identical((after.params, after.opt_state), (before.params, before.opt_state))
  assert np.signbit(after.params["final_norm"]["bias"][0])  # -0.0 kept, not made +0.0
  assert int(bad.step) == int(before.step) + 1  # the batch counter advances


def test_nonfinite_steps_are_skipped_counted_then_stop_the_run(corpus, tmp_path, monkeypatch):
  poisoned = {1, 4, 5, 6}  # loop steps whose batch gets NaN weights: one alone, then a streak
  calls = []

  def global_batch(batch, sharding):
    if len(calls) in poisoned:
      batch = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
    calls.append(1)
    return original(batch, sharding)

  original = loop._global_batch
  monkeypatch.setattr(loop, "_global_batch", global_batch)
  config = _config(corpus, tmp_path)
  config.train.update(max_consecutive_nonfinite=3, eval_every=100)
  workdir = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match=r"train\.max_consecutive_nonfinite=3.* Last "
                                               r"healthy checkpoint: step 4 in"):
    train_and_evaluate(config, workdir)
  rows = {r["step"]: r for r in metrics.read_metrics(workdir) if "loss" in r}
  assert (rows[2]["skipped_steps"], rows[2]["consecutive_nonfinite"]) == (1, 1)
  assert (rows[4]["skipped_steps"], rows[4]["consecutive_nonfinite"]) == (1, 0)
  assert rows[2]["loss"] == "nan"
  # Steps 2 and 6 end a log window with a skipped step: not healthy, not checkpointed.
  assert checkpointing.finished_steps(os.path.join(workdir, "checkpoints")) == [4]
  # The checkpoint of step 4 holds the parameters after steps 1, 3 and 4 (step 2 was skipped).
  saved = checkpointing.load_state_on_host(os.path.join(workdir, "checkpoints"), 4)
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    counters = manager.restore(4, args=ocp.args.Composite(
        counters=ocp.args.JsonRestore()))["counters"]
  assert (counters["skipped_steps"], counters["consecutive_nonfinite"]) == (1, 0)
  assert 0 < counters["min_loss"] <= counters["first_loss"]
  assert int(saved["step"]) == 4 and int(saved["opt_state"][1][0]["count"]) == 3


def test_damaged_checkpoints_fall_back_to_the_last_good_one(reference, tmp_path, caplog):
  config, reference_dir = reference
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_dir, workdir)
  step8, step6 = (os.path.join(workdir, "checkpoints", s) for s in ("8", "6"))
  with open(_array_files(step8)[-1], "r+b") as f:  # silently overwritten bytes
    f.seek(1000)
    f.write(bytes(b ^ 0xFF for b in f.read(16)))
  for path in _array_files(step6):  # truncated files, as from an interrupted copy
    os.truncate(path, os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING):
    train_and_evaluate(config, workdir)
  warnings = "\n".join(r.getMessage() for r in caplog.records)
  assert "/8 is unreadable" in warnings and "fingerprint" in warnings
  assert "/6 is unreadable" in warnings and "resumed from step 4" in warnings
  assert sorted(os.listdir(os.path.join(workdir, "corrupt"))) == ["6.1", "8.0"]
  _assert_bit_identical(_state(workdir, 8), _state(reference_dir, 8))


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(reference, tmp_path):
  config, reference_dir = reference
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_dir, workdir)
  for step in ("2", "4", "6", "8"):
    for path in _array_files(os.path.join(workdir, "checkpoints", step)):
      os.remove(path)
  with pytest.raises(OSError, match="no checkpoint in .* is readable"):
    train_and_evaluate(config, workdir)


def test_sigterm_saves_then_the_same_command_resumes_bit_identically(reference, tmp_path,
                                                                     monkeypatch):
  config, reference_dir = reference
  calls = []

  def global_batch(batch, sharding):  # a real SIGTERM while step 3 (0-based 2) is running
    calls.append(1)
    if len(calls) == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(batch, sharding)

  original = loop._global_batch
  monkeypatch.setattr(loop, "_global_batch", global_batch)
  workdir = str(tmp_path / "run")
  with pytest.raises(Preempted, match="checkpoint of step 3") as preempted:
    train_and_evaluate(config, workdir)
  assert preempted.value.step == 3
  assert checkpointing.finished_steps(os.path.join(workdir, "checkpoints")) == [2, 3]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
  monkeypatch.setattr(loop, "_global_batch", original)
  train_and_evaluate(config, workdir)
  _assert_bit_identical(_state(workdir, 8), _state(reference_dir, 8))


def test_unwritable_workdir_fails_at_start_naming_the_path(corpus, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(OSError, match=f"{blocker}/run/checkpoints is not writable"):
    train_and_evaluate(_config(corpus, tmp_path), str(blocker / "run"))


def test_failing_save_names_the_last_good_checkpoint_and_keeps_it(reference, tmp_path,
                                                                  monkeypatch):
  config, reference_dir = reference
  handler = ocp.handlers.JsonCheckpointHandler
  original, saves = handler._save_fn, []

  async def save_fn(self, x, directory):
    saves.append(directory)
    if len(saves) > 4 * 2:  # the disk fills up during the third checkpoint (4 JSON items each)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await original(self, x, directory)

  monkeypatch.setattr(handler, "_save_fn", save_fn)
  workdir = str(tmp_path / "run")
  with pytest.raises(OSError, match=r"No space left on device.*Last good checkpoint: step 4, "
                                    r"intact"):
    train_and_evaluate(config, workdir)
  directory = os.path.join(workdir, "checkpoints")
  assert checkpointing.finished_steps(directory) == [2, 4]
  _assert_bit_identical(_state(workdir, 4), _state(reference_dir, 4))


def _cli(corpus, tmp_path, workdir, *overrides, file_size_kib=None):
  """experiments.pretrain on test_loop's tiny model (configs/gpt2.py:tiny at length 32), under
  `ulimit -f file_size_kib` if given."""
  limit = [] if file_size_kib is None else [
      "bash", "-c", f'ulimit -f {file_size_kib} && exec "$@"', "bash"]
  command = [
      *limit, sys.executable, "-m", "experiments.pretrain", "--config=configs/gpt2.py:tiny",
      f"--workdir={workdir}", "--config.train.steps=8", "--config.opt.warmup_steps=2",
      "--config.train.global_batch_size=8", "--config.data.seq_len=32",
      "--config.model.max_seq_len=32", f"--config.data.text_globs=('{corpus}/*.py',)",
      f"--config.data.data_dir={tmp_path}/tfds", "--config.data.validation_fraction=0.2",
      "--config.train.eval_every=100", "--config.train.eval_batches=2", *overrides]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                        check=False)


def _assert_one_error_block(out, *expected):
  assert out.returncode == 1, out.stderr[-3000:]
  for noise in ("Traceback", "meta_path", "Exception ignored"):
    assert noise not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, out.stderr[-3000:]
  for text in expected:
    assert text in errors[0], errors[0]


def test_blown_up_run_stops_naming_its_last_healthy_checkpoint_then_a_lower_lr_resumes(
    corpus, tmp_path):
  workdir = tmp_path / "run"
  # lr 1e9: step 1 runs at lr 0 (warmup), step 2's update blows the weights up (finite, but far
  # larger than the weights), steps 3-5 are non-finite. Checkpoints every step: only step 1's
  # state is healthy.
  out = _cli(corpus, tmp_path, workdir, "--config.opt.lr=1e9", "--config.train.log_every=1",
             "--config.train.checkpoint_every=1", "--config.train.max_consecutive_nonfinite=3")
  _assert_one_error_block(out, "train.max_consecutive_nonfinite=3",
                          f"Last healthy checkpoint: step 1 in {workdir}/checkpoints")
  assert "step 2 is not checkpointed" in out.stderr and "blown up" in out.stderr
  assert checkpointing.finished_steps(str(workdir / "checkpoints")) == [1]
  with open(workdir / "config.json") as f:
    assert json.load(f)["opt"]["lr"] == 1e9
  # The same run with a sane learning rate resumes from step 1 and finishes.
  out = _cli(corpus, tmp_path, workdir, "--config.opt.lr=1e-2", "--config.train.log_every=1",
             "--config.train.checkpoint_every=1", "--config.train.max_consecutive_nonfinite=3")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step 1 of" in out.stdout
  rows = [r for r in metrics.read_metrics(str(workdir)) if "loss" in r and r["step"] > 1]
  assert [r["step"] for r in rows[-7:]] == list(range(2, 9))
  assert all(isinstance(r["loss"], float) and r["consecutive_nonfinite"] == 0 for r in rows[-7:])
  assert checkpointing.finished_steps(str(workdir / "checkpoints"))[-1] == 8
  with open(workdir / "summary.json") as f:
    assert json.load(f)["steps"] == 8


def test_full_disk_ends_with_one_error_naming_the_last_good_checkpoint(corpus, tmp_path):
  builders.make_data(test_loop._config(corpus, tmp_path))  # the dataset files, written unlimited
  # No file may grow past 256 KiB: a checkpoint needs more.
  out = _cli(corpus, tmp_path, tmp_path / "run", "--config.train.checkpoint_every=4",
             file_size_kib=256)
  _assert_one_error_block(out, "writing a checkpoint to", "Last good checkpoint: none")


def test_guard_judges_the_last_window_of_steps():
  guard = nonfinite.NonFiniteGuard(3, window=2)

  def step(n, loss, update=0.1, finite=True):
    guard.push(n, finite, {"loss": loss, "update_norm": update, "param_norm": 10.0})
    guard.flush()
    return guard.unhealthy(n)

  assert step(1, 5.0) is None and step(2, 2.0) is None
  assert "above 2 x the lowest loss 2" in step(3, 5.5)  # above 2 x 2.0 and the first loss 5.0
  assert "was unsound" in step(4, 3.0)  # step 3 is still in the window of 2
  assert step(5, 3.0) is None
  assert "blown up" in step(6, 3.0, update=10.0)  # as large as the weights it changed
  assert step(7, 3.0) and step(8, 3.0) is None
  assert "not finite" in step(9, float("nan"), finite=False)
  assert guard.resume_counters() == {"skipped_steps": 1, "consecutive_nonfinite": 1,
                                     "first_loss": 5.0, "min_loss": 2.0}
  resumed = nonfinite.NonFiniteGuard(3, {**guard.resume_counters(), "consecutive_nonfinite": 0},
                                     window=2)
  resumed.push(10, True, {"loss": 5.5, "update_norm": 0.1, "param_norm": 10.0})
  resumed.flush()
  assert "diverging" in resumed.unhealthy(10)  # fresh, 5.5 would be its first loss: fine
