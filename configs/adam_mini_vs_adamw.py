"""Adam-mini vs AdamW (and the per-tensor ablation, SGD): `experiments/compare_optimizers.py`.

`--config=configs/adam_mini_vs_adamw.py` runs everything at full size (pretraining = the
default model and corpus of configs/default.py); `--config=configs/adam_mini_vs_adamw.py:small`
runs every part end to end in well under a minute (tests).
"""

import ml_collections

from configs import default


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The comparison config.

  Args:
    settings: "full" or "small".

  Returns:
    The config: every key of configs/default.py plus `compare`.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/adam_mini_vs_adamw.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  c = default.get_config("seed", "model", "data", "train", "loss", "opt", "mesh", "sharding_rules")
  c.compare = ml_collections.ConfigDict(dict(
      parts=("state_memory", "step_memory", "update_time", "pretrain"),
      # (a) optimizer state bytes: configs named "file:size".
      state_memory_models=("gpt2:124m", "llama:llama2-7b"),
      # (b) compiled train-step peak memory (compile only), at a modest batch.
      step_memory_models=("gpt2:124m", "llama:1b"),
      step_memory_batch_size=8,
      step_memory_seq_len=512,
      memory_optimizers=("adamw", "adam_mini"),
      # (c) update time vs optax.adamw on random values of a model's parameter shapes.
      update_time_model="gpt2:124m",
      update_time_repeats=15,
      # (d) pretraining: identical seeds and schedule; one peak learning rate per optimizer.
      optimizers=("adamw", "adam_mini", "adam_mini_per_tensor", "sgd"),
      lr=ml_collections.ConfigDict(dict(adamw=3e-3, adam_mini=3e-3, adam_mini_per_tensor=3e-3,
                                        sgd=0.3)),
  ))
  if settings == "small":
    c.compare.state_memory_models = ("gpt2:tiny", "llama:tiny")
    c.compare.step_memory_models = ("gpt2:tiny",)
    c.compare.step_memory_batch_size = 8
    c.compare.step_memory_seq_len = 32
    c.compare.update_time_model = "llama:tiny"
    c.compare.update_time_repeats = 3
    c.model.update(num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16, embed_dim=32,
                   mlp_dim=64, max_seq_len=32)
    c.data.seq_len = 32
    c.train.update(steps=4, global_batch_size=8, log_every=2, eval_every=2, eval_batches=2,
                   checkpoint_every=4)
    c.opt.warmup_steps = 2
  return c
