"""LOMO / AdaLomo training: `python -m experiments.train_lomo --config=configs/lomo.py`.

Trains the default model with each of `lomo.train_optimizers` (LOMO / AdaLomo with the fused
step) and plots the loss curves (`configs/lomo.py:small` for tests). Their memory is measured by
experiments.lomo_memory with configs/lomo_memory.py.
"""

import ml_collections

from configs import default


def get_config(mode: str = "full") -> ml_collections.ConfigDict:
  """The LOMO config.

  Args:
    mode: "full" (the reported runs) or "small" (tiny models and few steps, for tests).

  Returns:
    The config.
  """
  if mode not in ("full", "small"):
    raise ValueError(f"configs/lomo.py: mode must be 'full' or 'small', got {mode!r}")
  c = default.get_config("seed", "model", "data", "train", "loss", "opt", "mesh", "sharding_rules")
  c.train.steps = 150
  c.train.log_every = 5
  c.train.eval_every = 50
  c.opt.warmup_steps = 15
  c.lomo = ml_collections.ConfigDict(dict(
      fused_optimizers=("lomo", "adalomo"),  # trained with the fused step
      train_optimizers=("adamw", "adalomo", "lomo"),
      lr_adamw=3e-3,
      lr_adalomo=3e-2,
      lr_lomo=0.3,
  ))
  if mode == "small":
    c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, embed_dim=32,
                   mlp_dim=64, max_seq_len=32)
    c.data.seq_len = 32
    c.train.update(steps=6, global_batch_size=8, log_every=2, eval_every=3, eval_batches=2)
    c.opt.warmup_steps = 1
  return c
