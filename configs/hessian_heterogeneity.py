"""Block-Hessian heterogeneity (Zhang et al., NeurIPS 2024): `experiments/hessian.py`.

  python -m experiments.hessian --config=configs/hessian_heterogeneity.py --workdir=/tmp/hh
  python -m experiments.hessian --config=configs/hessian_heterogeneity.py:small --workdir=...

Block spectra at initialisation (SLQ, JS0) of a small GPT, a CNN and an MLP (scikit-learn
digits), SGD-with-momentum vs AdamW at their best swept learning rates, and the HVP cost.
"""

import ml_collections


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
  c = ml_collections.ConfigDict()
  c.experiment = "heterogeneity"
  c.seed = 0
  c.models = ("gpt", "cnn", "mlp")
  c.gpt = ml_collections.ConfigDict(dict(
      num_layers=4, num_heads=4, embed_dim=64, mlp_dim=256, seq_len=32,
      vocab_size=257,  # ByteTokenizer: 256 bytes + EOS
      data_dir="",  # "": ~/tensorflow_datasets (the embedded stdlib corpus)
      # Blocks compared: path suffixes in these layers, plus the token embedding.
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
  c.train = ml_collections.ConfigDict(dict(
      steps=300, batch_size=16, warmup_steps=20, clip=1.0, weight_decay=0.01, momentum=0.9,
      eval_batches=8, log_every=10,
      sgd_lrs=(0.03, 0.1, 0.3, 1.0), adamw_lrs=(1e-3, 3e-3, 1e-2),
  ))
  c.speed = ml_collections.ConfigDict(dict(enabled=True, repeats=20, batch_size=8))
  if settings == "small":
    c.gpt.update(num_layers=2, num_heads=2, embed_dim=16, mlp_dim=32, seq_len=8, block_layers=(0,),
                 block_patterns=("attn/query/kernel", "mlp/up/kernel"))
    c.cnn.channels = (4, 4)
    c.mlp.hidden = (16,)
    c.spectrum.update(num_probes=2, num_steps=6, batch_size=4, grid_points=200, whole_model=False)
    c.train.update(steps=4, batch_size=8, warmup_steps=1, eval_batches=1, log_every=2,
                   sgd_lrs=(0.1,), adamw_lrs=(1e-3,))
    c.speed.repeats = 2
  return c
