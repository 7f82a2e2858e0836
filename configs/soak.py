"""The kill-and-resume soak (`experiments/soak.py`): a small pre-training run and its faults.

`:small` is the test's version (two kills, one SIGTERM, a few steps).
"""

import ml_collections

from configs import default


def get_config(mode: str = "full") -> ml_collections.ConfigDict:
  """The soak config: every key of configs/default.py plus the `soak` section.

  Args:
    mode: "full" (the reported run) or "small" (for tests).

  Returns:
    The config.
  """
  if mode not in ("full", "small"):
    raise ValueError(f"configs/soak.py: unknown mode {mode!r}; choose full or small")
  c = default.get_config()
  c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, embed_dim=32,
                 mlp_dim=64, max_seq_len=64)
  c.data.update(seq_len=64, shuffle_window=64)
  c.train.update(steps=600, global_batch_size=8, log_every=1, eval_every=10_000, eval_batches=2,
                 checkpoint_every=20, keep_checkpoints=3)
  c.opt.update(warmup_steps=10)
  c.soak = ml_collections.ConfigDict(dict(
      kills=6,  # SIGKILLs, each at a random moment once the run has made progress
      sigterms=1,  # then this many SIGTERMs (preemptions), each expected to exit with 143
      max_delay_s=3.0,  # a signal comes uniformly within this many seconds of the first new step
      seed=0,  # of the signal times
      num_processes=1,  # > 1: each run is that many local JAX processes of 4 CPU devices
      timeout_s=900,  # per launch
  ))
  if mode == "small":
    c.train.update(steps=24, checkpoint_every=4)
    c.soak.update(kills=2, sigterms=1, max_delay_s=1.0)
  return c
