"""Every key an experiment reads, with its default; the other configs override a few.

Any value is overridable from the command line, e.g. `--config.opt.lr=3e-4`.
"""

import ml_collections


def get_config(*sections: str) -> ml_collections.ConfigDict:
  """The default pre-training config: a 0.86M-parameter byte-level GPT-2 on the embedded corpus.

  Args:
    *sections: keep only these top-level keys (an experiment's config holds only the sections
      the experiment reads; experiments/cli.py refuses any other). None given: all of them.

  Returns:
    The config.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      architecture="gpt2",  # the preset: gpt2 | llama | qwen3 (bigmodel_jax/models/presets.py)
      # Features; None takes the preset's value, e.g. --config.model.qk_norm=True overrides it.
      norm=ml_collections.config_dict.placeholder(str),  # layernorm | rmsnorm
      mlp=ml_collections.config_dict.placeholder(str),  # gelu | swiglu
      positions=ml_collections.config_dict.placeholder(str),  # learned | rope
      use_bias=ml_collections.config_dict.placeholder(bool),
      qk_norm=ml_collections.config_dict.placeholder(bool),
      attn_logit_softcap=ml_collections.config_dict.placeholder(float),  # c * tanh(x / c)
      final_logit_softcap=ml_collections.config_dict.placeholder(float),
      vocab_size=0,  # 0: the tokenizer's vocabulary size
      num_layers=4,
      num_heads=4,
      num_kv_heads=4,
      head_dim=32,
      embed_dim=128,
      mlp_dim=512,
      max_seq_len=256,
      norm_eps=1e-5,
      rope_theta=10000.0,
      rope_scaling=ml_collections.config_dict.placeholder(dict),
      tie_embeddings=True,
      dtype="float32",
      param_dtype="float32",
      remat=False,
      scan_unroll=4,  # blocks per layer-scan iteration; 4 = the whole stack (faster on CPU)
  ))

  c.data = ml_collections.ConfigDict(dict(
      name="text_files",  # the embedded corpus: this Python's standard-library sources
      text_globs=ml_collections.config_dict.placeholder(tuple),  # None: the stdlib sources
      validation_fraction=0.05,
      data_dir="",  # "": ~/tensorflow_datasets
      tokenizer="byte",  # byte | sentencepiece
      tokenizer_vocab_size=8192,  # sentencepiece only
      seq_len=256,
      shuffle_window=1024,  # packed rows shuffled in windows of this many (train); 0: off
  ))

  c.train = ml_collections.ConfigDict(dict(
      steps=600,
      global_batch_size=16,
      grad_accum_steps=1,
      log_every=10,
      eval_every=200,
      eval_batches=64,  # validation rows drawn (seeded) from the whole split: this many batches
      eval_seed=0,  # which validation rows are drawn; independent of `seed`
      sample_tokens=200,  # at the end, sample 3 texts of this many tokens into summary.json; 0: off
      checkpoint_every=200,
      keep_checkpoints=3,  # 2 or more: a damaged latest checkpoint falls back to the one before
      max_consecutive_nonfinite=10,  # stop after this many skipped (non-finite) steps in a row
      peak_flops_per_device=ml_collections.config_dict.placeholder(float),
      hessian_every=0,  # > 0: log per-block top Hessian eigenvalues every this many steps
      hessian_lanczos_steps=20,
      hessian_blocks=(),  # path suffixes, e.g. ("attn/query/kernel", "mlp/up/kernel"); (): all
  ))

  c.loss = ml_collections.ConfigDict(dict(
      name="cross_entropy",  # cross_entropy | gem (Li et al., ICLR 2025)
      beta=0.7,  # gem
      h="linear",  # gem: linear | logsigmoid
  ))

  c.opt = ml_collections.ConfigDict(dict(
      name="adamw",
      lr=3e-3,
      schedule="cosine",  # cosine | constant | warmup_constant
      warmup_steps=60,
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,
      momentum=0.9,  # sgd
      nesterov=False,  # sgd
      max_grad_norm=1.0,  # 0 disables clipping
      # adam_mini: a hessian.propose_partition report (JSON file) whose partition it uses;
      # "": the Transformer rules (experiments.measured_partition writes such reports)
      partition_report="",
      fraction=0.1,  # mofo: fraction of each block updated per step
      l2sp=0.0,  # adamw_l2sp: strength of the pull towards the initial (pre-trained) weights
      clip_grad_value=0.0,  # lomo: element-wise gradient clipping, 0 disables
      adalomo_decay_rate=0.8,  # adalomo: second-moment decay 1 - t^-rate
      adalomo_clip_threshold=1.0,  # adalomo: update RMS clip per tensor
      adalomo_param_scale_eps=1e-3,  # adalomo: step size lr * max(eps, RMS(p))
  ))

  # Multi-process runs (bigmodel_jax/train/distributed.py). initialize=True with the other keys
  # unset detects them on SLURM, Cloud TPU pods, Open MPI and Kubernetes.
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False,
      coordinator_address="",  # host:port of process 0; "": detected (or $JAX_COORDINATOR_ADDRESS)
      num_processes=0,  # 0: detected
      process_id=-1,  # -1: detected
      cpu_devices_per_process=0,  # > 0: virtual CPU devices per process (one-machine runs)
      initialization_timeout_s=300,
  ))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Logical axis name -> mesh axes. The batch is split over data and fsdp; parameters over fsdp
  # (their embed dimension) and tensor (heads, mlp, vocab).
  c.sharding_rules = (
      ("batch", ("data", "fsdp")),
      ("vocab", "tensor"),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("head_dim", None),
      ("norm", None),
      ("layers", None),
      ("length", None),
  )
  if unknown := set(sections) - set(c.keys()):
    raise ValueError(f"configs/default.py has no sections {sorted(unknown)}; it has "
                     f"{list(c.keys())}")
  for key in set(c.keys()) - set(sections or c.keys()):
    del c[key]
  return c
