"""Train-step throughput against nanoGPT: `experiments/bench_step.py`.

  python -m experiments.bench_step --config=configs/bench_step.py --workdir=/tmp/bench_step
  python -m experiments.bench_step --config=configs/bench_step.py:small ...   (tests: seconds)

The model is configs/default.py's (the `make pretrain` GPT-2: 4 layers x 128 wide, 4 heads,
byte vocabulary, AdamW); each shape is (context, batch): nanoGPT's documented CPU run
(`--block_size=64 --batch_size=12`) and the `make pretrain` shape (256, 16).
"""

import ml_collections

from configs import default


def get_config(settings: str = "full") -> ml_collections.ConfigDict:
  """The step-benchmark config.

  Args:
    settings: "full" (the reported run, ~10 minutes on 2 CPU cores) or "small" (tests).

  Returns:
    The config: default.py's model, data and optimizer sections plus `bench`.
  """
  if settings not in ("full", "small"):
    raise ValueError(f"configs/bench_step.py: settings must be 'full' or 'small', got {settings!r}")
  small = settings == "small"
  c = default.get_config("seed", "model", "data", "opt", "mesh", "sharding_rules")
  c.train = ml_collections.ConfigDict(dict(steps=1_000, global_batch_size=16, grad_accum_steps=1,
                                           eval_batches=1, eval_seed=0))
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))  # one device, like nanoGPT
  c.bench = ml_collections.ConfigDict(dict(
      shapes=((64, 12),) if small else ((64, 12), (256, 16)),  # (context, batch)
      rounds=2 if small else 5,  # interleaved rounds: project, nanoGPT, project, ...
      steps=3 if small else 40,  # timed steps per round and framework
      warmup=1 if small else 5,  # untimed steps before each round's timing
      pipeline_batches=5 if small else 200,  # batches timed for the input pipeline alone
      torch_threads=(1, 2),  # nanoGPT runs at the fastest of these (chosen per shape)
      settle_s=0.0 if small else 1.0,  # idle seconds before each timing (spinning threads stop)
      profile_steps=2 if small else 5,  # steps traced by jax.profiler (runtime profile)
      op_repeats=2 if small else 20,  # calls per timing of each operation (op_timings.py)
  ))
  return c
