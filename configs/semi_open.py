"""Semi-open models and SCARA: `experiments/semi_open.py`.

  python -m experiments.semi_open --config=configs/semi_open.py --workdir=/tmp/scara
  python -m experiments.semi_open --config=configs/semi_open.py:small ...
  python -m experiments.semi_open --config=configs/semi_open.py --config.init_from=hf:DIR ...

A byte-level GPT-2 (8 blocks) pre-trained on the embedded corpus (or reused: `init_from` = an
earlier workdir of this experiment), then the recovery difficulty RD(n) and SCARA's n*, the
transition sweep, recovery attacks (FT-all, FT-closed) on bottom / top / single-block / SAP-like /
fully closed sets, and customisation of the public blocks on generated arithmetic. With
`init_from=hf:DIR` only the RD curve and n* of the imported model are computed. Spec:
shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md, part A (A.7).
"""

import ml_collections

from configs import default


def _opt(lr: float, b2: float, schedule: str, warmup_steps: int, min_lr_ratio: float):
  """An AdamW `opt` section (every key `train.optimizers.make_optimizer` reads for adamw)."""
  opt = default.get_config().opt
  opt.update(name="adamw", lr=lr, b1=0.9, b2=b2, weight_decay=0.1, schedule=schedule,
             warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, max_grad_norm=1.0)
  return opt


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The semi-open config.

  Args:
    settings: "full" (the reported run, ~25 minutes on 2 CPU cores) or "small" (tests: every
      part end to end in well under a minute).

  Returns:
    The config; every key is declared here and read by the experiment.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/semi_open.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  small = settings == "small"
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init and pre-training data order
  c.init_from = ""  # "": pre-train here; DIR: the victim of an earlier workdir; "hf:DIR": RD only
  c.model = default.get_config().model
  c.model.update(num_layers=8, num_heads=4, num_kv_heads=4, head_dim=24, embed_dim=96,
                 mlp_dim=384, max_seq_len=64, vocab_size=0)  # spec's d = 96 fallback
  if small:
    c.model.update(num_layers=4, num_heads=2, num_kv_heads=2, head_dim=8, embed_dim=16,
                   mlp_dim=32)
  # With init_from="hf:DIR": where the imported checkpoint is placed (one host: replicated).
  c.mesh = default.get_config().mesh
  c.sharding_rules = default.get_config().sharding_rules
  c.data = ml_collections.ConfigDict(dict(
      data_dir="",  # "": ~/tensorflow_datasets (the embedded stdlib corpus)
      max_bytes=200_000 if small else 4_000_000,  # corpus prefix, split contiguously:
      fractions=(0.85, 0.05, 0.10),  # D_pre, D_atk, D_eval
      seq_len=64,
      eval_chunks=4,  # D_eval cut into this many contiguous "benchmarks"
      eval_rows=8 if small else 64,  # windows per benchmark
      rd_rows=16 if small else 256,  # D_RD: fixed windows of D_atk
      rd_batch=8 if small else 64,
  ))
  # The victim's pre-training on D_pre: a trainer run (train_and_evaluate) in WORKDIR/victim;
  # its evaluation is on train.eval_batches batches of D_eval windows.
  c.train = default.get_config("train").train
  c.train.update(steps=20 if small else 600, global_batch_size=8 if small else 32,
                 log_every=10 if small else 100, eval_every=20 if small else 600,
                 eval_batches=2, checkpoint_every=20 if small else 200, sample_tokens=0)
  c.opt = _opt(3e-3, 0.95, "cosine", 5 if small else 50, 0.1)
  c.rd = ml_collections.ConfigDict(dict(
      seeds=(0, 1, 2),  # fresh full-model draws (the code uses one; seed 0 is reported alone)
      tolerance=0.2,  # tau: n* = min{n : (1 + tau) RD(n) >= RD_full}
      reinit_scale="fan_in",  # "architecture" (normal 0.02) or "fan_in" (1/sqrt(d_in)); A.7.0
      other_scales=("architecture",),  # RD also reported with these re-init scales
  ))
  c.diagnostics = ml_collections.ConfigDict(dict(
      sigmas=(0.01, 0.05, 0.1),  # D2 relative noise scales
      noise_seeds=3,
      rows=8 if small else 64,  # D_RD windows used
  ))
  c.recovery = ml_collections.ConfigDict(dict(
      steps=4 if small else 100,  # spec: 150, reduced within the A.7.8 budget
      batch_size=8 if small else 32,
      eval_every=2 if small else 50,  # the best evaluation is kept (the code's best-val model)
      attacker_seed=100,  # re-init draw (differs from rd.seeds) and data order
      single_layers=(0, 3) if small else (0, 2, 4, 6, 7),  # transition sweep S_l (even l + top)
      bottom_ks=(2,) if small else (2, 3, 4),
      top_ks=(1, 2),  # and n*
      sap_public=1 if small else 2,  # SAP-like: bottom sap_public blocks public, the rest closed
      ft_closed=True,  # also FT-closed on SCARA and top-n*
      opt=_opt(1e-3, 0.999, "cosine", 0, 0.9),  # the code: AdamW, lr to 0.9 lr, wd 0.1
  ))
  c.customisation = ml_collections.ConfigDict(dict(
      steps=4 if small else 150,  # spec: 200, reduced within the budget
      batch_size=8 if small else 32,
      seq_len=16,  # one zero-padded problem per row
      digits=2,
      reverse_answer=True,
      split_seed=0,
      accuracy_problems=16 if small else 500,
      opt=_opt(1e-3, 0.999, "constant", 0, 1.0),
  ))
  c.criteria = ml_collections.ConfigDict(dict(
      margin=0.10,  # E1: ARR(bottom) <= ARR(top) - margin; E3: ARR(SCARA) <= ARR(SAP) + margin
      transition_fraction=0.9,  # l_t = min{l : ARR(S_l) >= fraction * ARR(C0)}
      spearman_min=0.5,  # E2
      pearson_max=-0.5,  # E5
      custom_gap=0.05,  # E4: acc(SCARA) >= acc(Open) - gap
      rd_noise=0.05,  # E6: RD(n + 1) >= RD(n) - noise
      c0_slack=0.05,  # A5: L_rec(C0) <= L_orig + slack
  ))
  return c
