r"""RLHF on a verifiable task: ReMax against REINFORCE, RLOO, GRPO and PPO.

  python -m experiments.rlhf --config=configs/rlhf_arithmetic.py --workdir=/tmp/rlhf

A tiny byte-level GPT-2 is supervised fine-tuned (briefly, so that it is only partly right) on
zero-padded addition problems ("07+35=042\n"); from that one start, every method of
`rl.methods` trains with the same prompt batches, seeds and number of steps. The reward is the
fraction of the answer's characters that are right (`rl.rewards.arithmetic_reward`).
Both phases train through the trainer (`train_and_evaluate`: checkpoints, resume, non-finite
guard) and build their optimizer through the factory: `train` and `opt` are the RL phase's
(`train.global_batch_size` prompts per step; e.g. `--config.opt.name=mofo` fine-tunes the policy
with MoFO), `sft.train` and `sft.opt` the supervised phase's; the optimizers default to Adam
(b2 = 0.999, constant learning rate, no decay or clipping). PPO, whose value model is not part of
the trainer's state, runs the same steps, batches and evaluations on its own state.
`get_config("small")` is a seconds-long version for tests.
"""

from configs import default


def get_config(mode: str = ""):
  """The RLHF comparison; mode "small" shrinks every size for an end-to-end test."""
  c = default.get_config("seed", "model", "opt", "train", "mesh", "sharding_rules")
  c.opt.update(name="adamw", lr=3e-4, schedule="constant", warmup_steps=0, b2=0.999,
               weight_decay=0.0, max_grad_norm=0.0)  # Adam
  c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, embed_dim=64,
                 mlp_dim=256, max_seq_len=16)
  # The RL phase: the same prompt batches for every method; the greedy reward on
  # eval_batches x global_batch_size validation problems every eval_every steps.
  c.train.update(steps=150, global_batch_size=32, log_every=1, eval_every=5, eval_batches=8,
                 checkpoint_every=50, sample_tokens=0)
  c.task = dict(
      digits=2,  # digits per operand
      validation_fraction=0.2,
      split_seed=0,
  )
  c.sft = dict(
      train=default.get_config("train").train,  # the supervised phase's trainer keys
      opt=default.get_config("opt").opt,  # the optimizer of the supervised phase
  )
  c.sft.train.update(steps=300, global_batch_size=64, log_every=10, eval_every=100,
                     eval_batches=4, checkpoint_every=300, sample_tokens=0)
  c.sft.opt.update(name="adamw", lr=3e-3, schedule="constant", warmup_steps=0, b2=0.999,
                   weight_decay=0.0, max_grad_norm=0.0)  # Adam
  c.rl = dict(
      methods=("remax", "reinforce", "reinforce_mean", "rloo", "grpo", "ppo"),
      samples_per_prompt=1,  # remax, reinforce, reinforce_mean, ppo
      group_size=4,  # rloo, grpo: samples per prompt
      kl_coef=0.05,
      gamma=1.0,
      reward_clip=5.0,
      temperature=1.0,
      top_p=0.9,  # ReMax authors' sampling
      max_new_tokens=5,  # digits + 2 is the answer and its newline
      clip_ratio=0.2,
      value_clip=0.2,
      gae_lambda=0.95,
      ppo_epochs=4,
      grpo_epochs=1,
      time_repeats=5,  # timed repetitions of the fused step and of its phases (0: no costs)
      variance_batches=64,  # gradient estimates at the SFT parameters (0: skip)
  )
  if mode == "small":
    c.sft.train.update(steps=5, global_batch_size=8, log_every=1, eval_every=5, eval_batches=1,
                       checkpoint_every=5)
    c.train.update(steps=2, global_batch_size=8, eval_every=1, eval_batches=1,
                   checkpoint_every=2)
    c.rl.update(methods=("remax", "ppo"), group_size=2, ppo_epochs=2, time_repeats=1,
                variance_batches=2)
  elif mode:
    raise ValueError(f"configs/rlhf_arithmetic.py: unknown mode {mode!r} (use '' or 'small')")
  return c
