r"""Pre-trains a language model: `python -m experiments.pretrain --config=configs/pretrain.py`.

Example:
  python -m experiments.pretrain --config=configs/gpt2.py:124m --config.train.steps=100 \
      --config.opt.lr=3e-4 --workdir=/tmp/run

Running the same command again resumes from the workdir's latest checkpoint. Exit status: 0 when
the run is complete, 143 after a SIGTERM (the checkpoint of the current step is written; run the
same command again), 1 on an error: a config value outside its domain, a checkpoint that cannot be
written or resumed, or a streak of non-finite steps, each reported as one `error: ...` block that
names the key or the last good checkpoint (experiments/cli.py).
"""

import os
import sys

from absl import app, flags, logging

from bigmodel_jax.train import distributed
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate
from bigmodel_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
from experiments import cli

# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*TRAINER_READS, "distributed")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  distributed.initialize(flags.FLAGS.config.distributed)  # before anything touches the devices
  try:
    summary = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except Preempted as e:
    print(e, flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)
  logging.info("summary: %s", summary)
  print(final_report(summary, flags.FLAGS.workdir), flush=True)


def final_report(summary: dict, workdir: str) -> str:
  """What a run ends by printing: its figures, sampled texts and where its outputs are."""
  lines = [f"validation loss {summary['final_eval_loss']:.4f} nats/token "
           f"({summary['final_eval_bits_per_byte']:.3f} bits/byte) on "
           f"{summary['eval_tokens']:,} tokens after {summary['steps']} steps; "
           f"{summary['wall_time_s']:.0f} s"]
  for i, text in enumerate(summary["samples"]):
    lines += [f"--- sample {i + 1} ---", text.rstrip()]
  lines += ["---", f"loss curves: {os.path.join(workdir, 'loss.png')}",
            f"summary:     {os.path.join(workdir, 'summary.json')}"]
  return "\n".join(lines)


if __name__ == "__main__":
  cli.define_config_and_workdir(workdir_help="Run directory (outputs, checkpoints, resume).")
  cli.run(main, reads=READS)
