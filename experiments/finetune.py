r"""Fine-tunes a pre-trained model with several methods and measures forgetting.

  python -m experiments.pretrain --config=configs/pretrain.py --workdir=/tmp/mofo_pretrain
  python -m experiments.finetune --config=configs/finetune_forgetting.py \
      --config.init_from=/tmp/mofo_pretrain --workdir=/tmp/mofo_finetune

Starts from a checkpoint of experiments.pretrain (`init_from`; the model config comes from the
checkpoint, its optimizer state is not restored) or a Hugging Face Llama / GPT-2 directory
(`init_from="hf:DIR"`; the model config from its config.json, the numerics dtype / param_dtype /
remat from `model`, and its tokenizer.json tokenizes both the fine-tuning data and the
pre-training corpus `data`). Every method x learning rate of `finetune.methods` x
`finetune.lrs` is one run of the trainer (`train_and_evaluate`: checkpoints, resume, non-finite
guard, progress) in workdir/<method>_lr<lr>/, from the pre-trained parameters, with a fresh
optimizer of the factory, `train.steps` steps on the generated arithmetic domain; a rerun keeps
the finished runs. The trainer's evaluation is the fine-tune validation loss; at the end of a
run (its summary's "final_metrics"):

  ft_loss, ft_accuracy      validation loss (nats/token; over the answer tokens with
                            `finetune.loss_on="answer"`, the training loss as well) and
                            exact-match accuracy on held-out problems (greedy decoding)
  pretrain_loss, forgetting validation loss on the pre-training corpus, and its increase over the
                            pre-trained model's
  l2_distance, fraction_changed   ||p - p0|| and the fraction of entries with p != p0

Outputs in the workdir: config.json, metrics.jsonl (the pre-trained model's row and one per
finished run, each with its "run"), summary.json (every run; the best learning rate of every
method: highest accuracy, then least forgetting; the target check on those and at every
learning rate) and forgetting_vs_accuracy.png. See configs/finetune_forgetting.py.
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from bigmodel_jax.data import arithmetic, make_lm_dataset
from bigmodel_jax.data.tokenizers import HF_PREFIX
from bigmodel_jax.models.sampling import make_greedy_decoder
from bigmodel_jax.sharding import batch_sharding
from bigmodel_jax.train import builders, metrics, outputs
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import TRAINER_READS, evaluate, train_and_evaluate
from bigmodel_jax.train.pretrained import load_pretrained
from bigmodel_jax.train.task import Data, language_model_task, lm_eval_metrics
from experiments import cli
from experiments import forgetting_report as report

METHOD_PARAMETER = {"mofo": "fraction", "adamw_l2sp": "l2sp"}
LOSS_ON = ("answer", "document")  # finetune.loss_on: answer tokens only, or every token
OWN_SECTIONS = ("init_from", "init_step", "finetune")  # read here, not by the trainer


def parse_method(method: str) -> tuple[str, dict]:
  """"mofo@0.1" -> ("mofo", {"fraction": 0.1}); "adamw" -> ("adamw", {})."""
  name, _, value = method.partition("@")
  if not value:
    return name, {}
  if name not in METHOD_PARAMETER:
    raise ConfigError(f"finetune.methods: {method!r}: only {sorted(METHOD_PARAMETER)} take "
                      "a parameter after '@'")
  return name, {METHOD_PARAMETER[name]: float(value)}


def run_config(config: ml_collections.ConfigDict, method: str, lr: float
               ) -> ml_collections.ConfigDict:
  """The trainer's config of one run: `opt` with the method's name, parameter and `lr`; without
  the sections the task replaces (`data`, `model`) and this experiment's own."""
  name, overrides = parse_method(method)
  return derive(config, drop=(*OWN_SECTIONS, "data", "model"), values={
      "opt.name": name, "opt.lr": lr, **{f"opt.{k}": v for k, v in overrides.items()}})


def run_dir(workdir: str, method: str, lr: float) -> str:
  """workdir/<method>_lr<lr>, e.g. workdir/mofo_0.1_lr0.001."""
  return os.path.join(workdir, f"{method.replace('@', '_')}_lr{lr:g}")


def tokenizer_name(config: ml_collections.ConfigDict) -> str:
  """data.tokenizer, or init_from = "hf:DIR" (a Hugging Face checkpoint brings its tokenizer).

  Raises:
    ConfigError: naming data.tokenizer when it names another tokenizer than "byte" (the default).
  """
  if not config.init_from.startswith(HF_PREFIX) or config.data.tokenizer == config.init_from:
    return config.data.tokenizer
  if config.data.tokenizer != "byte":
    raise ConfigError(f"data.tokenizer ({config.data.tokenizer!r}) must be left at 'byte' or "
                      f"equal init_from ({config.init_from!r}): a Hugging Face checkpoint "
                      "brings its own tokenizer")
  return config.init_from


def arithmetic_data(config: ml_collections.ConfigDict, tokenizer) -> tuple[Data, dict]:
  """The fine-tuning data: training batches of generated additions and validation batches.

  Returns:
    (the trainer's Data, {split: ArithmeticSource}).
  """
  ft = config.finetune
  sources = {split: arithmetic.ArithmeticSource(
      split=split, digits=ft.digits, validation_fraction=ft.validation_fraction,
      seed=ft.split_seed, reverse_answer=ft.reverse_answer) for split in arithmetic.SPLITS}
  common = dict(tokenizer=tokenizer, seq_len=ft.seq_len,
                global_batch_size=config.train.global_batch_size, seed=config.seed,
                process_index=jax.process_index(), process_count=jax.process_count(),
                completion_only_loss=ft.loss_on == "answer", pack_documents=ft.pack_problems)
  eval_batches = list(make_lm_dataset(source=sources["validation"], split="validation",
                                      num_epochs=1, num_batches=config.train.eval_batches,
                                      **common))
  data = Data(
      train_iterator=lambda: make_lm_dataset(source=sources["train"], split="train", **common),
      eval_batches=lambda: eval_batches,
      description={split: builders.describe_split(s) for split, s in sources.items()},
      seq_len=ft.seq_len, tokenizer=tokenizer)
  return data, sources


@jax.jit
def distance_to(params, init_params) -> dict:
  """L2 distance and fraction of changed entries between two parameter pytrees."""
  diffs = jax.tree.leaves(jax.tree.map(lambda p, q: (p - q).astype(jnp.float32), params,
                                       init_params))
  changed = sum(jnp.sum(d != 0) for d in diffs)
  total = sum(d.size for d in diffs)
  return {"l2_distance": jnp.sqrt(sum(jnp.sum(d * d) for d in diffs)),
          "fraction_changed": changed / total}


@dataclasses.dataclass
class Comparison:
  """What every run shares: the pre-trained model, the data and the measurement of a model."""

  model_config: object
  init_params: dict
  init_step: int
  data: Data  # the fine-tuning data
  measure: Callable[[dict], dict]  # params -> the figures of the module docstring, less forgetting


def prepare(config: ml_collections.ConfigDict) -> Comparison:
  """Loads the pre-trained model and builds the data and the measurement every run shares."""
  ft = config.finetune
  if ft.task != "arithmetic":
    raise ConfigError(f"finetune.task must be 'arithmetic', got {ft.task!r}")
  if ft.loss_on not in LOSS_ON:
    raise ConfigError(f"finetune.loss_on must be one of {LOSS_ON}, got {ft.loss_on!r}")
  for method in ft.methods:
    parse_method(method)  # fail early on a bad method
  mesh, rules = builders.mesh_and_rules(config)
  builders.check_batch_divisibility(config.train.global_batch_size, 1, mesh)
  model_config, graphdef, init_params, init_step = load_pretrained(
      config.init_from, config.model, mesh, rules, config.init_step)
  for key, length in (("data.seq_len", config.data.seq_len), ("finetune.seq_len", ft.seq_len)):
    if not model_config.use_rope and length > model_config.max_seq_len:
      raise ConfigError(f"{key} ({length}) exceeds the model's position table "
                        f"({model_config.max_seq_len})")
  pretrain_data = builders.make_data(derive(config, values={
      "data.tokenizer": tokenizer_name(config), "train.eval_batches": ft.pretrain_eval_batches}))
  tokenizer = pretrain_data.tokenizer
  if model_config.vocab_size < tokenizer.vocab_size:
    raise ConfigError(f"the pre-trained model's vocabulary ({model_config.vocab_size}) is "
                      f"smaller than data.tokenizer's ({tokenizer.vocab_size})")
  data, sources = arithmetic_data(config, tokenizer)
  eval_step = jax.jit(lm_eval_metrics(graphdef))
  decode = make_greedy_decoder(graphdef, ft.digits + 1)
  batches = batch_sharding(mesh)

  def measure(params) -> dict:
    ft_loss = evaluate(eval_step, params, data.eval_batches(), batches)[0]["loss"]
    pretrain_loss = evaluate(eval_step, params, pretrain_data.eval_batches(), batches)[0]["loss"]
    accuracy = arithmetic.exact_match_accuracy(decode, params, sources["validation"], tokenizer,
                                               ft.accuracy_problems)
    distance = jax.device_get(distance_to(params, init_params))
    return {"ft_loss": ft_loss, "ft_accuracy": accuracy, "pretrain_loss": pretrain_loss,
            **{k: float(v) for k, v in distance.items()}}

  return Comparison(model_config, init_params, init_step, data, measure)


def finetune_run(config: ml_collections.ConfigDict, workdir: str, comparison: Comparison,
                 before: dict, method: str, lr: float) -> dict:
  """One method at one learning rate through the trainer; returns the run's row."""
  run = run_config(config, method, lr)
  task = language_model_task(comparison.model_config, comparison.data, run.loss,
                             init_params=lambda: comparison.init_params)

  def final_metrics(graphdef, params) -> dict:
    del graphdef
    figures = comparison.measure(params)
    return {**figures, "forgetting": figures["pretrain_loss"] - before["pretrain_loss"]}

  summary = train_and_evaluate(run, run_dir(workdir, method, lr), task=task,
                               final_metrics=final_metrics)
  return {"run": f"{method}/lr={lr:g}", "method": method, "lr": lr, "steps": summary["steps"],
          "train_time_s": summary["wall_time_s"], **summary["final_metrics"]}


def run_comparison(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fine-tunes with every method x learning rate of `config.finetune`; writes the outputs.

  Args:
    config: see configs/finetune_forgetting.py.
    workdir: output directory (config.json, metrics.jsonl, summary.json, PNG, a directory per
      run).

  Returns:
    The summary written to summary.json.
  """
  start = time.time()
  outputs.write_config(config, workdir)
  ft = config.finetune
  comparison = prepare(config)
  before = comparison.measure(comparison.init_params)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.write(0, {"run": "pretrained", **before})
  runs = []
  try:
    for method in ft.methods:
      for lr in ft.lrs:
        run = finetune_run(config, workdir, comparison, before, method, lr)
        writer.write(run["steps"], {k: v for k, v in run.items() if k != "steps"})
        print(f"{run['run']}: accuracy {100 * run['ft_accuracy']:.1f}%, ft loss "
              f"{run['ft_loss']:.4f}, forgetting {run['forgetting']:+.4f}, changed "
              f"{100 * run['fraction_changed']:.1f}%", flush=True)
        runs.append(run)
  finally:
    writer.close()
  best = report.best_per_method(runs)
  summary = {"init_from": config.init_from, "init_step": comparison.init_step,
             "num_params": comparison.model_config.num_params(), "pretrained": before,
             "runs": runs, "best_per_method": best,
             "target": report.target_check(best, ft.target_method, ft.target_baseline),
             "target_per_lr": report.target_check_per_lr(runs, ft.target_method,
                                                         ft.target_baseline),
             "wall_time_s": time.time() - start}
  outputs.write_summary(summary, workdir)
  report.plot_forgetting(runs, best, os.path.join(workdir, "forgetting_vs_accuracy.png"))
  return summary


# The config's top-level keys (experiments/cli.py refuses any other). `model` gives the numerics
# of an "hf:" import; `data` is the pre-training corpus, on which forgetting is measured.
READS = (*TRAINER_READS, *OWN_SECTIONS)


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
  cli.run(main, data_feeds_model=False, reads=READS)
