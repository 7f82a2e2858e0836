r"""A Bradley-Terry reward model on arithmetic preference pairs.

  python -m experiments.reward_model --config=configs/reward_model_arithmetic.py \
      --workdir=/tmp/reward_model

Pairs are two corrupted answers to one addition problem, the one with more right characters
preferred (`rl.reward_model.preference_pairs`); train pairs come from the train problems, the
held-out pairs from the validation problems. The model (`rl.value_model.ValueModel`: the
transformer of `model` with a scalar head) trains through the trainer (`train_and_evaluate`:
`train.*` keys, checkpoints, resume), on random batches of the train pairs, and is evaluated on
every held-out pair every `train.eval_every` steps. The optimizer is the factory's (`opt`, Adam by
default: b2 = 0.999, constant learning rate, no decay or clipping). `get_config("small")` is a
seconds-long version.
"""

from configs import default


def get_config(mode: str = ""):
  """The reward-model experiment; mode "small" shrinks every size for an end-to-end test."""
  c = default.get_config("seed", "model", "opt", "train", "mesh", "sharding_rules")
  c.opt.update(name="adamw", lr=1e-3, schedule="constant", warmup_steps=0, b2=0.999,
               weight_decay=0.0, max_grad_norm=0.0)  # Adam
  c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, embed_dim=64,
                 mlp_dim=256, max_seq_len=16)
  c.train.update(steps=400, global_batch_size=64, log_every=25, eval_every=25,
                 checkpoint_every=200, sample_tokens=0)
  c.task = dict(digits=2, validation_fraction=0.2, split_seed=0)
  c.reward_model = dict(
      train_pairs=20000,  # candidate pairs drawn (ties are dropped)
      heldout_pairs=2000,
  )
  if mode == "small":
    c.reward_model.update(train_pairs=64, heldout_pairs=32)
    c.train.update(steps=3, global_batch_size=8, log_every=1, eval_every=3, checkpoint_every=3)
  elif mode:
    raise ValueError(f"configs/reward_model_arithmetic.py: unknown mode {mode!r} (use '' or "
                     "'small')")
  return c
