"""Fine-tuning from a pre-training checkpoint, and the forgetting comparison of several methods.

`run_comparison(config, workdir)`: restore the parameters of an experiments.pretrain workdir
(`config.init_from`; the model config comes from the checkpoint, its optimizer state is not
restored) or import a Hugging Face Llama / GPT-2 directory (`config.init_from="hf:DIR"`; the
model config comes from its config.json, the numerics dtype / param_dtype / remat from
`config.model`, and its tokenizer.json tokenizes both the fine-tuning data and the pre-training
corpus `data`), then for every method x learning rate of `config.finetune`: a fresh optimizer from
the factory, `finetune.steps` steps on the generated arithmetic domain, and the figures of the run:

  ft_loss, ft_accuracy      validation loss (nats/token; over the answer tokens with
                            `finetune.loss_on="answer"`, the training loss as well) and
                            exact-match accuracy on held-out problems (greedy decoding)
  pretrain_loss, forgetting validation loss on the pre-training corpus, and its increase over the
                            pre-trained model's
  l2_distance, fraction_changed   ||p - p0|| and the fraction of entries with p != p0

Outputs in the workdir: config.json, metrics.jsonl (one row per logged step and one per finished
run, each with its "run"), summary.json (every run; the best learning rate of every method:
highest accuracy, then least forgetting; the target check on those and at every learning rate)
and forgetting_vs_accuracy.png.
"""

import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import hf, sharding
from bigmodel_jax.data import arithmetic, make_lm_dataset
from bigmodel_jax.data.tokenizers import HF_PREFIX
from bigmodel_jax.models.sampling import make_greedy_decoder
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train import builders, checkpointing, metrics, outputs, plots
from bigmodel_jax.train.loop import evaluate
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.state import TrainState, state_shardings
from bigmodel_jax.train.step import make_train_step
from bigmodel_jax.train.task import config_token_loss, lm_eval_metrics

METHOD_PARAMETER = {"mofo": "fraction", "adamw_l2sp": "l2sp"}
LOSS_ON = ("answer", "document")  # finetune.loss_on: answer tokens only, or every token


def restore_pretrained(init_from: str, mesh, rules, step: int = -1):
  """The model config, graph and parameters of a checkpoint of a pretrain workdir.

  Args:
    init_from: the workdir of experiments.pretrain (holds checkpoints/).
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    step: the checkpoint's step; -1: the latest.

  Returns:
    (TransformerConfig, graphdef, params sharded on `mesh`, checkpoint step).
  """
  directory = os.path.join(init_from, "checkpoints")
  if not init_from or not os.path.isdir(directory):
    raise ValueError(f"init_from={init_from!r} holds no checkpoints/ of experiments.pretrain")
  manager = checkpointing.make_manager(directory, max_to_keep=1_000_000, async_save=False)
  if step == -1:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f"init_from={init_from!r}: no finished checkpoint in {directory}")
  elif step not in manager.all_steps():
    raise ValueError(f"init_step={step}: no such checkpoint in {directory} (there are "
                     f"{sorted(manager.all_steps())})")
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  model_config = builders.model_config(ml_collections.ConfigDict(meta["model"]), None)
  graphdef, abstract_params = abstract_model(model_config)
  shardings = sharding.param_shardings(abstract_params, mesh, rules)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nnx.to_pure_dict(abstract_params), shardings)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item={"params": target}, restore_args=ocp.checkpoint_utils.construct_restore_args(
          {"params": target}), partial_restore=True)))
  manager.close()
  return model_config, graphdef, restored["state"]["params"], step


def load_initial(config: ml_collections.ConfigDict, mesh, rules):
  """The model config, graph, parameters and step that fine-tuning starts from.

  Args:
    config: the experiment config; `init_from` is a pretrain workdir or "hf:DIR".
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.

  Returns:
    (TransformerConfig, graphdef, params sharded on `mesh`, checkpoint step; 0 for "hf:").
  """
  if not config.init_from.startswith(HF_PREFIX):
    return restore_pretrained(config.init_from, mesh, rules, config.init_step)
  if config.init_step != -1:
    raise ValueError(f"init_step={config.init_step} applies to a pretrain workdir, not to "
                     f"init_from={config.init_from!r} (leave it at -1)")
  model_config, graphdef, params = hf.import_checkpoint(
      config.init_from.removeprefix(HF_PREFIX), mesh, rules, **builders.numerics(config.model))
  return model_config, graphdef, params, 0


def with_checkpoint_tokenizer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with data.tokenizer set to "hf:DIR" when init_from is "hf:DIR".

  Raises:
    ValueError: naming data.tokenizer when it names another tokenizer than "byte" (the default).
  """
  if not config.init_from.startswith(HF_PREFIX) or config.data.tokenizer == config.init_from:
    return config
  if config.data.tokenizer != "byte":
    raise ValueError(f"data.tokenizer ({config.data.tokenizer!r}) must be left at 'byte' or "
                     f"equal init_from ({config.init_from!r}): a Hugging Face checkpoint "
                     "brings its own tokenizer")
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.tokenizer = config.init_from
  return config


def parse_method(method: str) -> tuple[str, dict]:
  """"mofo@0.1" -> ("mofo", {"fraction": 0.1}); "adamw" -> ("adamw", {})."""
  name, _, value = method.partition("@")
  if not value:
    return name, {}
  if name not in METHOD_PARAMETER:
    raise ValueError(f"finetune.methods: {method!r}: only {sorted(METHOD_PARAMETER)} take "
                     "a parameter after '@'")
  return name, {METHOD_PARAMETER[name]: float(value)}


def method_opt(opt: ml_collections.ConfigDict, method: str, lr: float):
  """The `opt` section of one run: `opt` with the method's name, parameter and learning rate."""
  name, overrides = parse_method(method)
  run_opt = ml_collections.ConfigDict(opt.to_dict())
  run_opt.update(name=name, lr=lr, **overrides)
  return run_opt


@jax.jit
def distance_to(params, init_params) -> dict:
  """L2 distance and fraction of changed entries between two parameter pytrees."""
  diffs = jax.tree.leaves(jax.tree.map(lambda p, q: (p - q).astype(jnp.float32), params,
                                       init_params))
  changed = sum(jnp.sum(d != 0) for d in diffs)
  total = sum(d.size for d in diffs)
  return {"l2_distance": jnp.sqrt(sum(jnp.sum(d * d) for d in diffs)),
          "fraction_changed": changed / total}


class Context:
  """What every run shares: mesh, model graph, pre-trained params, data and jitted evaluations."""

  def __init__(self, config: ml_collections.ConfigDict):
    config = with_checkpoint_tokenizer(config)
    self.config = config
    ft = config.finetune
    if ft.task != "arithmetic":
      raise ValueError(f"finetune.task must be 'arithmetic', got {ft.task!r}")
    if ft.loss_on not in LOSS_ON:
      raise ValueError(f"finetune.loss_on must be one of {LOSS_ON}, got {ft.loss_on!r}")
    self.mesh, self.rules = builders.mesh_and_rules(config)
    builders.check_batch_divisibility(ft.batch_size, 1, self.mesh)
    self.model_config, self.graphdef, self.init_params, self.init_step = load_initial(
        config, self.mesh, self.rules)
    for key, length in (("data.seq_len", config.data.seq_len), ("finetune.seq_len", ft.seq_len)):
      if not self.model_config.use_rope and length > self.model_config.max_seq_len:
        raise ValueError(f"{key} ({length}) exceeds the model's position table "
                         f"({self.model_config.max_seq_len})")
    self.pretrain_data = builders.make_data(config)
    self.tokenizer = self.pretrain_data.tokenizer
    if self.model_config.vocab_size < self.tokenizer.vocab_size:
      raise ValueError(f"the pre-trained model's vocabulary ({self.model_config.vocab_size}) is "
                       f"smaller than data.tokenizer's ({self.tokenizer.vocab_size})")
    self.sources = {split: arithmetic.ArithmeticSource(
        split=split, digits=ft.digits, validation_fraction=ft.validation_fraction,
        seed=ft.split_seed, reverse_answer=ft.reverse_answer) for split in arithmetic.SPLITS}
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    params_shardings = jax.tree.map(lambda x: x.sharding, self.init_params)
    self.eval_step = jax.jit(lm_eval_metrics(self.graphdef),
                             in_shardings=(params_shardings, self.batch_sharding),
                             out_shardings=NamedSharding(self.mesh, PartitionSpec()))
    self.decode = make_greedy_decoder(self.graphdef, ft.digits + 1)

  def ft_batches(self, split: str, **kwargs):
    ft = self.config.finetune
    return make_lm_dataset(source=self.sources[split], tokenizer=self.tokenizer, split=split,
                           seq_len=ft.seq_len, global_batch_size=ft.batch_size,
                           seed=self.config.seed, completion_only_loss=ft.loss_on == "answer",
                           pack_documents=ft.pack_problems, **kwargs)

  def measure(self, params) -> dict:
    """ft_loss, ft_accuracy, pretrain_loss, l2_distance and fraction_changed of `params`."""
    ft = self.config.finetune
    ft_loss = evaluate(self.eval_step, params, self.ft_batches(
        "validation", num_epochs=1, num_batches=ft.eval_batches), self.batch_sharding)[0]["loss"]
    pretrain_loss = evaluate(self.eval_step, params, self.pretrain_data.eval_batches(),
                             self.batch_sharding)[0]["loss"]
    accuracy = arithmetic.exact_match_accuracy(
        self.decode, params, self.sources["validation"], self.tokenizer, ft.accuracy_problems)
    distance = jax.device_get(distance_to(params, self.init_params))
    return {"ft_loss": ft_loss, "ft_accuracy": accuracy, "pretrain_loss": pretrain_loss,
            **{k: float(v) for k, v in distance.items()}}


def _initial_state(context: Context, optimizer) -> tuple[TrainState, TrainState]:
  """A TrainState at the pre-trained params with a fresh optimizer state, and its shardings."""
  _, abstract_params = abstract_model(context.model_config)
  shardings = state_shardings(abstract_params, optimizer, context.mesh, context.rules)
  params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings.params)(
      context.init_params)
  opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
  return TrainState(jnp.zeros((), jnp.int32), params, opt_state), shardings


def finetune_run(context: Context, method: str, lr: float, writer, bar) -> dict:
  """Fine-tunes the pre-trained model with one method and learning rate; returns its figures."""
  ft = context.config.finetune
  run = f"{method}/lr={lr:g}"
  optimizer, schedule = make_optimizer(method_opt(context.config.opt, method, lr), ft.steps)
  state, shardings = _initial_state(context, optimizer)
  replicated = NamedSharding(context.mesh, PartitionSpec())
  train_step = jax.jit(make_train_step(context.graphdef, optimizer, schedule,
                                       token_loss=config_token_loss(context.config.loss)),
                       in_shardings=(shardings, context.batch_sharding),
                       out_shardings=(shardings, replicated), donate_argnums=0)
  batches = context.ft_batches("train")
  start = time.time()
  for step in range(1, ft.steps + 1):
    batch = {k: jax.make_array_from_process_local_data(context.batch_sharding, v)
             for k, v in next(batches).items()}
    state, step_metrics = train_step(state, batch)
    if step % ft.log_every == 0 or step == ft.steps:
      step_metrics = jax.device_get(step_metrics)
      if not math.isfinite(float(step_metrics["loss"])):
        raise FloatingPointError(f"{run}: non-finite loss at step {step}")
      writer.write(step, {"run": run, "loss": step_metrics["loss"], "lr": step_metrics["lr"]})
      bar.set_postfix(run=run, loss=f"{float(step_metrics['loss']):.3f}")
    bar.update(1)
  return {"run": run, "method": method, "lr": lr, "steps": ft.steps,
          "train_time_s": time.time() - start, **context.measure(state.params)}


def best_per_method(runs: list[dict]) -> dict:
  """For every method, its run with the highest accuracy; among runs of equal accuracy, the one
  that forgets least (a practitioner who reaches the same accuracy at two learning rates keeps
  the one that forgets less; the same rule for every method)."""
  best = {}
  for run in runs:
    key = (run["ft_accuracy"], -run["forgetting"])
    current = best.get(run["method"])
    if current is None or key > (current["ft_accuracy"], -current["forgetting"]):
      best[run["method"]] = run
  return best


def target_check(best: dict, method: str, baseline: str) -> dict | None:
  """Whether `method` keeps accuracy within 2 points of `baseline` and forgets <= half as much.

  Args:
    best: method -> its chosen run (`best_per_method`, or the runs of one learning rate).
    method: the method checked (e.g. "mofo@0.1").
    baseline: the method it is compared with (e.g. "adamw").

  Returns:
    The gap, the forgetting ratio and the verdicts; None if either method has no run.
  """
  if method not in best or baseline not in best:
    return None
  ours, theirs = best[method], best[baseline]
  accuracy_gap = 100 * (theirs["ft_accuracy"] - ours["ft_accuracy"])
  ratio = (ours["forgetting"] / theirs["forgetting"] if theirs["forgetting"] > 0
           else float("inf"))
  return {"method": method, "baseline": baseline, "accuracy_gap_points": accuracy_gap,
          "forgetting_ratio": ratio, "accuracy_within_2_points": accuracy_gap <= 2,
          "forgetting_at_most_half": ratio <= 0.5, "met": accuracy_gap <= 2 and ratio <= 0.5}


def target_check_per_lr(runs: list[dict], method: str, baseline: str) -> dict:
  """`target_check` at every learning rate both methods ran: {str(lr): check}."""
  checks = {}
  for lr in sorted({run["lr"] for run in runs}):
    at_lr = {run["method"]: run for run in runs if run["lr"] == lr}
    check = target_check(at_lr, method, baseline)
    if check is not None:
      checks[f"{lr:g}"] = check
  return checks


def plot_forgetting(runs: list[dict], best: dict, path: str) -> None:
  """Forgetting against fine-tune accuracy, a point per run, the best run of each method ringed."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, method in enumerate(sorted({r["method"] for r in runs})):
    color = f"C{i}"
    points = [(100 * r["ft_accuracy"], r["forgetting"]) for r in runs if r["method"] == method]
    ax.scatter(*zip(*points), color=color, label=method, alpha=0.6)
    top = best[method]
    ax.scatter([100 * top["ft_accuracy"]], [top["forgetting"]], s=160, facecolors="none",
               edgecolors=color, linewidths=2)
    ax.annotate(f"lr={top['lr']:g}", (100 * top["ft_accuracy"], top["forgetting"]),
                textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
  plots.label_axes(ax, "fine-tune exact-match accuracy (%)", "forgetting (nats/token)",
                   "increase of pre-training validation loss vs fine-tune accuracy\n"
                   "(ringed: the best learning rate of each method)", legend_fontsize=8)
  plots.save_figure(fig, path)


def run_comparison(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fine-tunes with every method x learning rate of `config.finetune`; writes the outputs.

  Args:
    config: see configs/finetune_forgetting.py.
    workdir: output directory (config.json, metrics.jsonl, summary.json, PNG).

  Returns:
    The summary written to summary.json.
  """
  start = time.time()
  outputs.write_config(config, workdir)
  ft = config.finetune
  for method in ft.methods:
    parse_method(method)  # fail early on a bad method
  context = Context(config)
  before = context.measure(context.init_params)
  writer = metrics.MetricWriter(workdir)
  writer.write(0, {"run": "pretrained", **before})
  runs = []
  bar = metrics.progress_bar(len(ft.methods) * len(ft.lrs) * ft.steps, 0)
  try:
    for method in ft.methods:
      for lr in ft.lrs:
        run = finetune_run(context, method, lr, writer, bar)
        run["forgetting"] = run["pretrain_loss"] - before["pretrain_loss"]
        writer.write(ft.steps, {k: v for k, v in run.items() if k != "steps"})
        bar.write(f"{run['run']}: accuracy {100 * run['ft_accuracy']:.1f}%, ft loss "
                  f"{run['ft_loss']:.4f}, forgetting {run['forgetting']:+.4f}, changed "
                  f"{100 * run['fraction_changed']:.1f}%")
        runs.append(run)
  finally:
    bar.close()
    writer.close()
  best = best_per_method(runs)
  summary = {"init_from": config.init_from, "init_step": context.init_step,
             "num_params": context.model_config.num_params(), "pretrained": before,
             "runs": runs, "best_per_method": best,
             "target": target_check(best, ft.target_method, ft.target_baseline),
             "target_per_lr": target_check_per_lr(runs, ft.target_method, ft.target_baseline),
             "wall_time_s": time.time() - start}
  outputs.write_summary(summary, workdir)
  plot_forgetting(runs, best, os.path.join(workdir, "forgetting_vs_accuracy.png"))
  return summary
