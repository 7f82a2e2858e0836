"""LOMO / AdaLomo memory: `python -m experiments.lomo_memory --config=configs/lomo_memory.py`.

Compiles the train step of each `memory.models` entry at one batch (AdamW and SGD unfused, LOMO
and AdaLomo with the fused step) and reports XLA's peak memory per device
(`configs/lomo_memory.py:small` for tests).
"""

import ml_collections

from configs import default


def get_config(mode: str = "full") -> ml_collections.ConfigDict:
  """The LOMO memory config.

  Args:
    mode: "full" (the reported measurement) or "small" (tiny models, for tests).

  Returns:
    The config.
  """
  if mode not in ("full", "small"):
    raise ValueError(f"configs/lomo_memory.py: mode must be 'full' or 'small', got {mode!r}")
  c = default.get_config("opt", "mesh", "sharding_rules")
  c.memory = ml_collections.ConfigDict(dict(
      models=("gpt2:124m", "llama:1b"),  # configs/<file>.py:<size>
      optimizers=("adamw", "sgd", "lomo", "adalomo"),
      fused_optimizers=("lomo", "adalomo"),  # compiled with the fused step
      batch_size=1,
      seq_len=1024,
  ))
  if mode == "small":
    c.memory.update(models=("gpt2:tiny", "llama:tiny"), seq_len=32)
  return c
