"""Adam's (b1, b2) region: `experiments/adam_betas.py`.

  python -m experiments.adam_betas --config=configs/adam_betas.py --workdir=/tmp/betas
  python -m experiments.adam_betas --config=configs/adam_betas.py:small ...

(a) counterexample: Adam on Zhang et al.'s counterexample (2.5) over a 50 x 53 (b1, b2) grid for
several n, both samplers and two starting points, several index sequences (the final gap's median
is reported). (b) transformer: a tiny byte-level GPT-2 trained with plain Adam at every cell of a
coarser grid, at two batch sizes. Spec: shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md, part B.
"""

import ml_collections

from configs import default


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The Adam-betas config.

  Args:
    settings: "full" (the reported run, ~15 minutes on 2 CPU cores) or "small" (tests: both
      parts end to end in seconds).

  Returns:
    The config; every key is declared here and read by the experiment.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/adam_betas.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  small = settings == "small"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.counterexample = ml_collections.ConfigDict(dict(
      ns=(3, 10) if small else (3, 10, 30),  # functions in the finite sum
      a=1.0,  # the minority slope
      eta0=1.0,  # step size eta0 / sqrt(k)
      eps=1e-8,
      steps=2_000 if small else 50_000,
      x0s=(-3.0, 0.0),  # starting points; the first is the primary one
      samplings=("iid", "shuffle"),  # the first is the primary one
      seeds=1 if small else 3,  # index sequences per setting (the gap's median is reported)
      grid_step=0.2 if small else 0.02,  # b1 and b2 in [0, 1) by this step ...
      extra_b2=(0.99, 0.995, 0.999),  # ... and these b2 values
      converged_gap=1.0,  # |x_T - x*| below: converged
      diverged_gap=5.0,  # above: diverged
      plot_clip=400.0,  # colour scale clip of the heatmaps
  ))
  model = default.get_config().model
  model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, embed_dim=64,
               mlp_dim=256, max_seq_len=64)
  if small:
    model.update(head_dim=8, embed_dim=16, mlp_dim=32)
  c.transformer = ml_collections.ConfigDict(dict(
      model=model,
      data_dir="",  # "": ~/tensorflow_datasets (the embedded stdlib corpus, built on first use)
      seq_len=64,
      b1s=(0.0, 0.9) if small else (0.0, 0.5, 0.8, 0.9, 0.95, 0.99),
      b2s=(0.5, 0.999) if small else (0.5, 0.8, 0.9, 0.95, 0.99, 0.999),
      batch_sizes=(2, 4) if small else (4, 32),  # n = corpus / batch: small batches, large n
      steps=12 if small else 400,
      lr=3e-3,  # constant
      eps=1e-8,
      eval_steps=4 if small else 50,  # the final loss: mean over these last steps
      eval_rows=8 if small else 64,  # the fixed evaluation batch (validation rows)
      unstable_margin=0.3,  # final loss above the best cell's + this: unstable
      spike_ratio=2.0,  # max loss after step 50 over its running minimum above this: unstable
  ))
  return c
