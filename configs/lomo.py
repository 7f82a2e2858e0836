"""LOMO / AdaLomo experiments: `--config=configs/lomo.py` (or `configs/lomo.py:small` for tests).

experiments.lomo_memory compiles the train step of each `lomo.memory_models` entry at one batch
(AdamW and SGD unfused, LOMO and AdaLomo fused) and reports XLA's peak memory; experiments.
train_lomo trains the default model with each of `lomo.train_optimizers` (LOMO / AdaLomo with the
fused step) and plots the loss curves.
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
      memory_models=("gpt2:124m", "llama:1b"),  # configs/<file>.py:<size>
      memory_optimizers=("adamw", "sgd", "lomo", "adalomo"),
      fused_optimizers=("lomo", "adalomo"),  # measured / trained with the fused step
      memory_batch_size=1,
      memory_seq_len=1024,
      train_optimizers=("adamw", "adalomo", "lomo"),
      lr_adamw=3e-3,
      lr_adalomo=3e-2,
      lr_lomo=0.3,
      lr_sgd=0.3,
  ))
  if mode == "small":
    c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=16, embed_dim=32,
                   mlp_dim=64, max_seq_len=32)
    c.data.seq_len = 32
    c.train.update(steps=6, global_batch_size=8, log_every=2, eval_every=3, eval_batches=2)
    c.opt.warmup_steps = 1
    c.lomo.update(memory_models=("gpt2:tiny", "llama:tiny"), memory_seq_len=32)
  return c
