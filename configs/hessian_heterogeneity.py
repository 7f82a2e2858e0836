"""Block-Hessian heterogeneity (Zhang et al., NeurIPS 2024): `experiments/hessian.py`.

  python -m experiments.hessian --config=configs/hessian_heterogeneity.py --workdir=/tmp/hh
  python -m experiments.hessian --config=configs/hessian_heterogeneity.py:small --workdir=...

Block spectra at initialisation (SLQ, JS0) of a small GPT, a CNN and an MLP (scikit-learn
digits), SGD-with-momentum vs AdamW at their best swept learning rates (each run through the
trainer: `train`, `opt`, `model`, `data`, `mesh` are configs/default.py's sections; `sweep` holds
the learning-rate grids and seeds), and the HVP cost.
"""

import ml_collections

from configs import default


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The heterogeneity config.

  Args:
    settings: "full" or "small" (tests: every part end to end in seconds).

  Returns:
    The config; every key is declared here.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/hessian_heterogeneity.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  c = default.get_config("seed", "model", "data", "train", "opt", "mesh", "sharding_rules")
  c.experiment = "heterogeneity"
  c.models = ("gpt", "cnn", "mlp")
  # The GPT (byte tokens of the embedded stdlib corpus: `data` as configs/default.py's).
  c.model.update(architecture="gpt2", num_layers=4, num_heads=4, num_kv_heads=4, head_dim=16,
                 embed_dim=64, mlp_dim=256, max_seq_len=32, tie_embeddings=True)
  c.data.update(seq_len=32, shuffle_window=0)  # packed rows in order, as this experiment had
  # Blocks of the GPT compared: path suffixes in these layers, plus the token embedding.
  c.gpt = ml_collections.ConfigDict(dict(
      block_patterns=("attn/query/kernel", "attn/key/kernel", "attn/value/kernel",
                      "attn/out/kernel", "mlp/up/kernel", "mlp/down/kernel"),
      block_layers=(0, 3), extra_blocks=("embed/embedding",),
  ))
  c.cnn = ml_collections.ConfigDict(dict(channels=(16, 16, 32, 32),
                                         block_patterns=("kernel",)))
  c.mlp = ml_collections.ConfigDict(dict(hidden=(128, 64, 64), block_patterns=("kernel",)))
  c.spectrum = ml_collections.ConfigDict(dict(
      num_probes=10, num_steps=100, reorth="none",  # the paper's SLQ settings
      batch_size=8, num_batches=1,  # the fixed batches of the Hessian (mean loss)
      grid_points=10000, sigma2=1e-5, overhead=0.01, whole_model=True,
  ))
  # Every run of the sweep: the trainer's `train` and `opt` sections (opt.name / opt.lr / seed
  # set per run from `sweep`). Digits models evaluate on the whole test split.
  c.train.update(steps=300, global_batch_size=16, eval_batches=8, log_every=10, eval_every=300,
                 checkpoint_every=300, sample_tokens=0)
  c.opt.update(warmup_steps=20, max_grad_norm=1.0, weight_decay=0.01, momentum=0.9, b2=0.999,
               min_lr_ratio=0.1, schedule="cosine")
  c.sweep = ml_collections.ConfigDict(dict(
      sgd_lrs=(0.03, 0.1, 0.3, 1.0), adamw_lrs=(1e-3, 3e-3, 1e-2),
      seeds=(0,),  # e.g. (0, 1, 2): mean and 95% interval per optimizer
  ))
  c.speed = ml_collections.ConfigDict(dict(enabled=True, repeats=20))
  if settings == "small":
    c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=8, embed_dim=16,
                   mlp_dim=32, max_seq_len=8)
    c.data.seq_len = 8
    c.gpt.update(block_layers=(0,), block_patterns=("attn/query/kernel", "mlp/up/kernel"))
    c.cnn.channels = (4, 4)
    c.mlp.hidden = (16,)
    c.spectrum.update(num_probes=2, num_steps=6, batch_size=4, grid_points=200, whole_model=False)
    c.train.update(steps=4, global_batch_size=8, eval_batches=1, log_every=2, eval_every=4,
                   checkpoint_every=4)
    c.opt.warmup_steps = 1
    c.sweep.update(sgd_lrs=(0.1,), adamw_lrs=(1e-3,))
    c.speed.repeats = 2
  return c
