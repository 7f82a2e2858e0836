"""`make bench-gpu`: GPT-2 124M in bfloat16 on one GPU (experiments/bench_gpu.py runs
experiments/pretrain.py with this config once per optimizer).

  python -m experiments.bench_gpu --workdir=runs/bench_gpu [--optimizers=adamw,adam_mini,mofo]
"""

from configs import gpt2


def get_config():
  """GPT-2 124M (context 1024, byte tokenizer on the embedded corpus), bfloat16 compute with
  float32 weights, 300 steps of 32 x 1024 tokens; evaluation and one checkpoint at the end."""
  c = gpt2.get_config("124m")
  c.model.update(dtype="bfloat16", param_dtype="float32", scan_unroll=1)
  c.train.update(steps=300, global_batch_size=32, log_every=25, eval_every=300, eval_batches=8,
                 checkpoint_every=300, keep_checkpoints=2, sample_tokens=0)
  c.opt.update(warmup_steps=30)
  return c
