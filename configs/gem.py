"""GEM vs cross-entropy on the multi-answer task: `--config=configs/gem.py` (`:small` for tests).

A small GPT-2 is trained from scratch on `bigmodel_jax.data.multi_answer` (every prompt has k!
correct answers, the data shows them with a skew) with each loss of `gem.losses`, then evaluated
on held-out prompts. Every run goes through the trainer (`train_and_evaluate`): the `train`,
`opt`, `loss`, `mesh` and `model` sections are the shared ones of configs/default.py; the task
replaces the `data` section. `loss.h` is GEM's h; each run's `loss.name` / `loss.beta` come from
`gem.losses`.
"""

import ml_collections

from configs import default


def get_config(mode: str = "full") -> ml_collections.ConfigDict:
  """The GEM experiment config.

  Args:
    mode: "full" (the reported run) or "small" (a few steps, for tests).

  Returns:
    The config.
  """
  if mode not in ("full", "small"):
    raise ValueError(f"configs/gem.py: mode must be 'full' or 'small', got {mode!r}")
  c = default.get_config("seed", "model", "train", "loss", "opt", "mesh", "sharding_rules")
  c.loss.update(name="gem", beta=0.7, h="linear")  # each run sets name / beta from gem.losses
  c.task = ml_collections.ConfigDict(dict(
      num_letters=16, answer_len=3, skew=(0.55, 0.25, 0.1, 0.05, 0.03, 0.02),
      held_out_fraction=0.2))
  c.model.update(architecture="gpt2", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
                 embed_dim=64, mlp_dim=256, max_seq_len=7,  # 2 * answer_len + 1
                 tie_embeddings=True, scan_unroll=1)
  c.train.update(steps=1500, global_batch_size=64, log_every=50, eval_every=100,
                 eval_batches=4,  # held-out batches (skewed answers) for the trainer's eval_loss
                 checkpoint_every=500, sample_tokens=0)
  # AdamW as in the paper's SFT: warmup then cosine to 10%, clipping at 1, no weight decay.
  c.opt.update(name="adamw", lr=3e-3, warmup_steps=50, b2=0.999, weight_decay=0.0,
               max_grad_norm=1.0, min_lr_ratio=0.1, schedule="cosine")
  c.gem = ml_collections.ConfigDict(dict(
      # "ce", or "gem:<beta>" (h = loss.h); each trained from the same seed on the same batches.
      losses=("ce", "gem:0.5", "gem:0.7", "gem:0.9"),
      eval_prompts=256,  # held-out prompts for NLL, entropy and sampling
      num_samples=16,  # n of best-of-n, coverage and distinct-n
      temperature=1.0,
  ))
  if mode == "small":
    c.train.update(steps=20, global_batch_size=16, log_every=10, eval_every=10,
                   checkpoint_every=10, eval_batches=2)
    c.opt.warmup_steps = 2
    c.gem.update(losses=("ce", "gem:0.7"), eval_prompts=8, num_samples=4)
    c.model.update(embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=2)
  return c
