r"""RLHF on a verifiable task: ReMax against REINFORCE, RLOO, GRPO and PPO.

  python -m experiments.rlhf --config=configs/rlhf_arithmetic.py --workdir=/tmp/rlhf

A tiny byte-level GPT-2 is supervised fine-tuned (briefly, so that it is only partly right) on
zero-padded addition problems ("07+35=042\n"); from that one start, every method of
`rl.methods` trains with the same prompt batches, seeds and number of steps. The reward is the
fraction of the answer's characters that are right (`rl.rewards.arithmetic_reward`).
Both phases build their optimizer through the factory: `opt` is the RL phase's (e.g.
`--config.opt.name=mofo` fine-tunes the policy with MoFO), `sft.opt` the supervised phase's; the
defaults are Adam (b2 = 0.999, constant learning rate, no decay or clipping).
`get_config("small")` is a seconds-long version for tests.
"""

from configs import default


def get_config(mode: str = ""):
  """The RLHF comparison; mode "small" shrinks every size for an end-to-end test."""
  c = default.get_config("seed", "model", "opt")
  c.opt.update(name="adamw", lr=3e-4, schedule="constant", warmup_steps=0, b2=0.999,
               weight_decay=0.0, max_grad_norm=0.0)  # Adam
  c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, embed_dim=64,
                 mlp_dim=256, max_seq_len=16)
  c.task = dict(
      digits=2,  # digits per operand
      validation_fraction=0.2,
      split_seed=0,
  )
  c.sft = dict(
      steps=300,
      batch_size=64,
      opt=default.get_config("opt").opt,  # the optimizer of the supervised phase
  )
  c.sft.opt.update(name="adamw", lr=3e-3, schedule="constant", warmup_steps=0, b2=0.999,
                   weight_decay=0.0, max_grad_norm=0.0)  # Adam
  c.rl = dict(
      methods=("remax", "reinforce", "reinforce_mean", "rloo", "grpo", "ppo"),
      steps=150,
      prompts_per_step=32,  # distinct prompts per step: the same batches for every method
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
      log_every=5,  # greedy reward on the evaluation prompts every this many steps
      eval_prompts=256,  # validation problems
      time_repeats=5,  # timed repetitions of the fused step per method
      variance_batches=64,  # gradient estimates at the SFT parameters (0: skip)
  )
  if mode == "small":
    c.sft.update(steps=5, batch_size=8)
    c.rl.update(methods=("remax", "ppo"), steps=2, prompts_per_step=4, group_size=2,
                ppo_epochs=2, log_every=1, eval_prompts=8, time_repeats=1, variance_batches=2)
  elif mode:
    raise ValueError(f"configs/rlhf_arithmetic.py: unknown mode {mode!r} (use '' or 'small')")
  return c
