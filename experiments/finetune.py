r"""Fine-tunes a pre-trained model with several methods and measures forgetting.

  python -m experiments.pretrain --config=configs/pretrain.py --workdir=/tmp/mofo_pretrain
  python -m experiments.finetune --config=configs/finetune_forgetting.py \
      --config.init_from=/tmp/mofo_pretrain --workdir=/tmp/mofo_finetune

See configs/finetune_forgetting.py for the methods, learning rates and sizes, and
bigmodel_jax/train/finetune.py for the figures written to the workdir.
"""

import json

from absl import app, flags

from bigmodel_jax.train.finetune import run_comparison
from experiments import cli


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run_comparison(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({"pretrained": summary["pretrained"], "best_per_method": {
      method: {k: run[k] for k in ("lr", "ft_accuracy", "ft_loss", "forgetting", "l2_distance",
                                   "fraction_changed")}
      for method, run in summary["best_per_method"].items()}, "target": summary["target"],
      "target_per_lr": summary["target_per_lr"]}, indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False)
