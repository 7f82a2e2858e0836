"""A partition measured from the Hessian: `experiments/measured_partition.py`.

  python -m experiments.measured_partition --config=configs/measured_partition.py --workdir=/tmp/mp
  python -m experiments.measured_partition --config=configs/measured_partition.py:small ...

(a) GPT: this project's tiny GPT-2 (configs/gpt2.py "tiny", with 4 heads of 16 so that per-head
blocks are a real choice), trained on the embedded corpus and probed with `propose_partition`
at several steps, against the paper's partition. (b) CNN: the partition proposed for the digits
CNN, then Adam-mini with it vs AdamW (learning rate tuned for each on a validation split,
several seeds, 95% confidence intervals). Every training run goes through the trainer: `train`,
`opt`, `model`, `data` and `mesh` are configs/default.py's sections (`train` / `opt`: the CNN
comparison's runs; the GPT's run takes `gpt.*` for its batch size and learning rate).
"""

import ml_collections

from configs import default, gpt2


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The measured-partition config.

  Args:
    settings: "full" (the default run, a few minutes on 2 CPU cores) or "small" (tests: every
      part end to end in seconds).

  Returns:
    The config; every key is declared here and read by the experiment.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/measured_partition.py: settings must be 'full' or 'small', "
                     f"got {settings!r}")
  c = default.get_config("seed", "model", "data", "train", "opt", "mesh", "sharding_rules")
  c.parts = ("gpt", "cnn")
  c.probe = ml_collections.ConfigDict(dict(
      num_probes=8,  # probe vectors per candidate cut and layer
      tolerance=0.3,  # the largest accepted leakage (fraction of |Hv|^2 outside the block)
      criterion="leakage",  # or "max_block_ratio"
      head_sizes=(),  # (): every divisor of every axis as a group size (a model no rule knows)
      probe_batch=16,  # HVPs computed together
      compile_per_leaf=False,  # False: one compiled whole-model HVP for all leaves (small models)
      tolerance_sweep=(0.1, 0.2, 0.3, 0.4, 0.5),  # re-selection from the same measurements
  ))
  # (a) the GPT: the embedded stdlib corpus in byte tokens ("": ~/tensorflow_datasets).
  c.model = gpt2.get_config("tiny").model
  c.model.update(num_heads=4, num_kv_heads=4, head_dim=16, max_seq_len=32)
  c.data.update(seq_len=32, shuffle_window=0)  # packed rows in order, as this experiment had
  c.gpt = ml_collections.ConfigDict(dict(
      global_batch_size=16,
      probe_steps=(0, 300, 1500),  # AdamW steps after which the partition is proposed
      report_step=300,  # the headline comparison (one of probe_steps)
      lr=3e-3,  # after a linear warmup (opt.schedule="warmup_constant"), constant
      warmup_steps=20,
      hessian_batch_size=16,  # rows of data.seq_len tokens in the probed loss
      log_every=25,
  ))
  c.cnn = ml_collections.ConfigDict(dict(
      channels=(16, 16, 32, 32),
      probe_train_steps=200,  # AdamW steps before probing, as for the GPT
      probe_lr=3e-3,
      hessian_batch_size=256,  # images in the probed loss
      validation_fraction=0.2,  # of the digits' train split: selects the learning rate
  ))
  # (b) every run of the comparison (and the CNN's probe run): the trainer's sections.
  c.train.update(steps=600, global_batch_size=64, log_every=20, eval_every=600,
                 checkpoint_every=600, eval_batches=4,  # the GPT's validation batches
                 sample_tokens=0)
  # Both optimizers: the same schedule; weight decay on rank >= 2 leaves (kernels), not biases;
  # no clipping; Adam's b2 = 0.999.
  c.opt.update(warmup_steps=30, weight_decay=1e-4, b2=0.999, max_grad_norm=0.0,
               min_lr_ratio=0.1, schedule="cosine")
  c.sweep = ml_collections.ConfigDict(dict(
      seeds=(0, 1, 2, 3, 4),
      lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),  # the grid, the same for both optimizers
  ))
  if settings == "small":
    c.probe.update(num_probes=1, tolerance_sweep=(0.3,))
    c.model.update(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=4, embed_dim=8,
                   mlp_dim=16, max_seq_len=8)
    c.data.seq_len = 8
    c.gpt.update(global_batch_size=8, probe_steps=(0, 2), report_step=2, warmup_steps=1,
                 hessian_batch_size=2, log_every=1)
    c.cnn.update(channels=(2, 2), probe_train_steps=2, hessian_batch_size=8)
    c.train.update(steps=4, global_batch_size=8, log_every=2, eval_every=4, checkpoint_every=4,
                   eval_batches=1)
    c.opt.warmup_steps = 1
    c.sweep.update(seeds=(0, 1), lrs=(1e-2,))
  return c
