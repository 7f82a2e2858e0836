"""GEM vs cross-entropy on the multi-answer task: `--config=configs/gem.py` (`:small` for tests).

A small GPT-2 is trained from scratch on `bigmodel_jax.data.multi_answer` (every prompt has k!
correct answers, the data shows them with a skew) with each loss of `gem.losses`, then evaluated
on held-out prompts. `loss` is the fine-tuning loss section (`--config.loss.name=gem`) that
`losses.make_token_loss(loss.name, beta=loss.beta, h=loss.h)` turns into a token loss.
"""

import ml_collections


def get_config(mode: str = "full") -> ml_collections.ConfigDict:
  """The GEM experiment config.

  Args:
    mode: "full" (the reported run) or "small" (a few steps, for tests).

  Returns:
    The config.
  """
  if mode not in ("full", "small"):
    raise ValueError(f"configs/gem.py: mode must be 'full' or 'small', got {mode!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.loss = ml_collections.ConfigDict(dict(name="gem", beta=0.7, h="linear"))
  c.task = ml_collections.ConfigDict(dict(
      num_letters=16, answer_len=3, skew=(0.55, 0.25, 0.1, 0.05, 0.03, 0.02),
      held_out_fraction=0.2))
  c.model = ml_collections.ConfigDict(dict(
      architecture="gpt2", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
      embed_dim=64, mlp_dim=256, tie_embeddings=True))
  c.train = ml_collections.ConfigDict(dict(steps=1500, batch_size=64, lr=3e-3, warmup_steps=50,
                                           weight_decay=0.0, log_every=50))
  c.gem = ml_collections.ConfigDict(dict(
      # "ce", or "gem:<beta>" (h = loss.h); each trained from the same seed on the same batches.
      losses=("ce", "gem:0.5", "gem:0.7", "gem:0.9"),
      eval_prompts=256,  # held-out prompts for NLL, entropy and sampling
      num_samples=16,  # n of best-of-n, coverage and distinct-n
      temperature=1.0,
  ))
  if mode == "small":
    c.train.update(steps=20, batch_size=16, warmup_steps=2, log_every=10)
    c.gem.update(losses=("ce", "gem:0.7"), eval_prompts=8, num_samples=4)
    c.model.update(embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=2)
  return c
