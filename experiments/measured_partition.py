r"""A partition measured from the Hessian: recovered on GPT-2, proposed for a CNN, trained with.

  python -m experiments.measured_partition --config=configs/measured_partition.py --workdir=/tmp/mp

gpt: this project's tiny GPT-2, trained with AdamW and probed with `hessian.propose_partition`
  at several steps (stacked layers declared on axis 0 under `layers`); per leaf, the proposal
  against the paper's partition (EXPECTED_GPT below), matched / total (the headline at
  `gpt.report_step`), and the count again at other tolerances and with the other criterion
  (re-selected from the same measurements).
cnn: the partition proposed for the digits CNN (after a short AdamW run), then Adam-mini with it
  vs optax.adamw: the learning rate of each tuned on a validation split over one grid, several
  seeds, final train loss and test accuracy with 95% confidence intervals (Student t).
Outputs in the workdir: config.json, metrics.jsonl (+ TensorBoard), summary.json, the full
probe reports partition_report_{gpt,cnn}.json, and PNG plots.

References: Zhang et al., "Why Transformers Need Adam: A Hessian Perspective" (NeurIPS 2024);
Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025).
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import scipy.stats
import tqdm
from absl import flags
from flax import nnx
from ml_collections import config_flags

from bigmodel_jax import hessian
from bigmodel_jax.data import ByteTokenizer, load_source, make_lm_dataset
from bigmodel_jax.data.digits import load_digits
from bigmodel_jax.hessian import measured_partition as mp
from bigmodel_jax.models import LAYER_AXES, create_model
from bigmodel_jax.models.cnn import CNN
from bigmodel_jax.optim import adam_mini
from bigmodel_jax.optim.weight_decay import decay_mask
from bigmodel_jax.train import builders, outputs, plots
from bigmodel_jax.train.metrics import MetricWriter
from bigmodel_jax.train.state import TrainState
from bigmodel_jax.train.step import make_eval_step, make_train_step
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The paper's partition (Adam-mini, ICLR 2025, final version) under this project's names, as
# the per-layer axes that index blocks: leaf -> (index axes of one layer's tensor, meaning).
# Layouts: embed (V, D); query/key/value (D, H, Dh); out (H, Dh, D); mlp (in, out); norms (D,).
# Biases (the paper: per element, plain Adam) and the position table (the authors' code: whole
# tensor) are conventions rather than Hessian findings: reported, not counted.
EXPECTED_GPT = {
    "embed/embedding": ((0,), "per token (row)"),
    "layers/attn/query/kernel": ((1,), "per head"),
    "layers/attn/key/kernel": ((1,), "per kv head"),
    "layers/attn/value/kernel": ((1, 2), "per output neuron"),
    "layers/attn/out/kernel": ((2,), "per output neuron"),
    "layers/mlp/up/kernel": ((1,), "per output neuron"),
    "layers/mlp/down/kernel": ((1,), "per output neuron"),
    "layers/attn_norm/scale": ((), "whole tensor"),
    "layers/mlp_norm/scale": ((), "whole tensor"),
    "final_norm/scale": ((), "whole tensor"),
}


def _split(model):
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(state)


def _mean_loss(graphdef):
  """loss(params, batch) -> mean cross-entropy (the eval step's sum over its weight)."""
  loss_sum = make_eval_step(graphdef)

  def loss(params, batch):
    total, weight = loss_sum(params, batch)
    return total / jnp.maximum(weight, 1.0)

  return loss


def _progress(bar):
  def callback(name, entry):
    bar.set_postfix_str(f"{name}: {entry['chosen']}")
    bar.update()
  return callback


def probe(loss, params, batch, c, key, layer_axes, label: str):
  """`propose_partition` on the loss of one fixed batch, with a progress bar over leaves.

  One batch is closed over directly: `hessian.mean_loss` scans over batches, and a vmapped
  HVP through that scan runs ~30x slower on CPU for the CNN (convolutions in a loop body).
  """
  p = c.probe
  bar = tqdm.tqdm(total=len(jax.tree.leaves(params)), desc=f"[{label}] probing", unit="leaf")
  start = time.time()
  partition, report = hessian.propose_partition(
      lambda params: loss(params, batch), params, key, layer_axes=layer_axes,
      num_probes=p.num_probes, tolerance=p.tolerance, head_sizes=tuple(p.head_sizes) or None,
      criterion=p.criterion, probe_batch=p.probe_batch, compile_per_leaf=p.compile_per_leaf,
      callback=_progress(bar))
  bar.close()
  return partition, report, time.time() - start


def make_trainer(graphdef, optimizer, params, next_batch, writer, tag: str, log_every: int):
  """The project's train step (train/step.py), jitted once, advanced on demand.

  Returns:
    (advance, losses): advance(steps) -> parameters after `steps` more steps; losses lists
    every step's loss (logged to metrics.jsonl as `tag`/pretrain_loss).
  """
  step_fn = jax.jit(make_train_step(graphdef, optimizer, lambda count: 0.0))
  state = [TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))]
  losses = []

  def advance(steps: int):
    for _ in tqdm.trange(steps, desc=f"[{tag}] AdamW before probing", leave=False,
                         mininterval=1.0):
      state[0], metrics = step_fn(state[0], next_batch(len(losses)))
      losses.append(float(metrics["loss"]))
      if len(losses) % log_every == 0:
        writer.write(len(losses), {f"{tag}/pretrain_loss": np.mean(losses[-log_every:])})
    return state[0].params

  return advance, losses


def _schedule(lr: float, warmup: int, steps: int):
  return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, 2), 0.1 * lr)


# ----------------------------------------------------------------------------- (a) GPT-2


def compare(report: dict, expected: dict) -> list[dict]:
  """One row per leaf: the proposal, the paper's block, whether they agree, their leakages."""
  rows = []
  for name, entry in report.items():
    axis, shape = entry["layer_axis"], entry["shape"]
    layer_shape = [d for a, d in enumerate(shape) if a != axis]
    want = expected.get(name)
    plain = entry["view"] == layer_shape
    expected_entry = None if want is None else next(
        (e for e in entry["candidates"]
         if e["view"] == layer_shape and tuple(e["index_axes"]) == want[0]), None)
    rows.append({
        "leaf": name, "shape": shape, "proposed": entry["chosen"],
        "blocks_per_layer": entry["blocks_per_layer"],
        "proposed_leakage": next(e["leakage"] for e in entry["candidates"]
                                 if e["name"] == entry["chosen"]) if entry["candidates"] else 0.0,
        "expected": None if want is None else want[1],
        "expected_leakage": None if expected_entry is None else expected_entry["leakage"],
        "match": None if want is None else bool(plain and tuple(entry["index_axes"]) == want[0]),
    })
  return rows


def _matched(rows: list[dict]) -> tuple[int, int]:
  counted = [r for r in rows if r["match"] is not None]
  return sum(r["match"] for r in counted), len(counted)


def tolerance_sweep(report: dict, tolerances) -> dict:
  """Matched / total at each tolerance, for both criteria (no new HVPs)."""
  out = {}
  for criterion in mp.CRITERIA:
    out[criterion] = {}
    for tol in tolerances:
      matched, total = _matched(compare(mp.reselect(report, tol, criterion), EXPECTED_GPT))
      out[criterion][f"{tol:g}"] = f"{matched}/{total}"
  return out


def plot_candidates(report: dict, names, path: str, tolerance: float, title: str) -> None:
  """Leakage of every candidate against its number of blocks; chosen (red), paper's (star)."""
  cols = 5
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
  for ax, name in zip(axes.flat, names):
    entry = report[name]
    cands = entry["candidates"]
    ax.scatter([e["num_blocks"] for e in cands], [e["leakage"] for e in cands], s=12, c="grey")
    chosen = next(e for e in cands if e["name"] == entry["chosen"])
    ax.scatter([chosen["num_blocks"]], [chosen["leakage"]], s=40, c="red", label="proposed")
    want = EXPECTED_GPT.get(name)
    layer_shape = [d for a, d in enumerate(entry["shape"]) if a != entry["layer_axis"]]
    for e in cands:
      if want is not None and e["view"] == layer_shape and tuple(e["index_axes"]) == want[0]:
        ax.scatter([e["num_blocks"]], [e["leakage"]], s=90, marker="*", c="gold",
                   edgecolors="k", label="paper")
    ax.axhline(tolerance, color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{name}\n{entry['chosen']}", fontsize=7)
    ax.set_xlabel("blocks per layer", fontsize=7)
    ax.set_ylabel("leakage", fontsize=7)
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.suptitle(title, fontsize=9)
  plots.save_figure(fig, path, dpi=110)


def _print_table(rows: list[dict], step: int, matched: int, total: int, seconds: float):
  print(f"[gpt] after {step} steps the proposed partition matches the paper's on "
        f"{matched}/{total} leaves (probing {seconds:.0f} s)", flush=True)
  for r in rows:
    flag = {True: "ok", False: "DIFFERS", None: "(not counted)"}[r["match"]]
    print(f"  {r['leaf']:28s} {r['proposed']:30s} paper: {r['expected'] or '-':18s} {flag}",
          flush=True)


def gpt_part(c, workdir: str, writer, key) -> dict:
  """(a) Trains the tiny GPT-2, proposes a partition at each probe step, compares each."""
  g = c.gpt
  if g.report_step not in g.probe_steps:
    raise ValueError(f"gpt.report_step ({g.report_step}) must be one of gpt.probe_steps "
                     f"{tuple(g.probe_steps)}")
  tokenizer = ByteTokenizer()
  graphdef, params = _split(create_model(builders.model_config(g.model, tokenizer.vocab_size),
                                         nnx.Rngs(c.seed)))

  def batches(split, size, count=None):
    source = load_source("text_files", data_dir=g.data_dir or None, split=split)
    return make_lm_dataset(source=source, tokenizer=tokenizer, split=split, seq_len=g.seq_len,
                           global_batch_size=size, seed=c.seed, num_batches=count)

  train = batches("train", g.batch_size)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      optax.warmup_constant_schedule(0.0, g.lr, max(g.warmup_steps, 1)), weight_decay=0.0))
  advance, losses = make_trainer(graphdef, optimizer, params,
                                 lambda i: {k: jnp.asarray(v) for k, v in next(train).items()},
                                 writer, "gpt", g.log_every)
  hessian_batch = {k: jnp.asarray(v) for k, v in
                   next(batches("validation", g.hessian_batch_size, 1)).items()}
  reports, by_step = {}, {}
  for step in sorted(g.probe_steps):
    params = advance(step - len(losses))
    _, reports[step], seconds = probe(_mean_loss(graphdef), params, hessian_batch, c,
                                      jax.random.fold_in(key, step), LAYER_AXES,
                                      f"gpt step {step}")
    rows = compare(reports[step], EXPECTED_GPT)
    matched, total = _matched(rows)
    _print_table(rows, step, matched, total, seconds)
    writer.write(step, {"gpt/matched_leaves": matched, "gpt/compared_leaves": total})
    by_step[str(step)] = {
        "matched": matched, "total": total, "probe_seconds": seconds,
        "train_loss": float(np.mean(losses[-max(1, g.log_every):])) if losses else None,
        "proposed": {r["leaf"]: r["proposed"] for r in rows},
        "tolerance_sweep": tolerance_sweep(reports[step], c.probe.tolerance_sweep)}
    plot_candidates(reports[step], list(EXPECTED_GPT),
                    os.path.join(workdir, f"gpt_leakage_step{step}.png"), c.probe.tolerance,
                    f"tiny GPT-2 after {step} steps: matched {matched}/{total}")
  outputs.write_json(os.path.join(workdir, "partition_report_gpt.json"),
                     {str(step): report for step, report in reports.items()})
  plots.plot_loss_curves([{"step": i + 1, "loss": v} for i, v in enumerate(losses)],
                         os.path.join(workdir, "gpt_pretrain_loss.png"),
                         "tiny GPT-2: AdamW, probed at " + ", ".join(map(str, g.probe_steps)))
  headline = by_step[str(g.report_step)]
  return {"report_step": g.report_step, "matched": headline["matched"],
          "total": headline["total"], "table": compare(reports[g.report_step], EXPECTED_GPT),
          "tolerance_sweep": headline["tolerance_sweep"], "by_step": by_step}


# ----------------------------------------------------------------------------- (b) CNN


def digits_splits(c) -> dict:
  """Train / validation (from the digits' train split) / test arrays."""
  x, y = load_digits("train", seed=c.seed)
  order = np.random.default_rng(c.seed).permutation(len(y))
  num_val = round(c.train.validation_fraction * len(y))
  x_test, y_test = load_digits("test", seed=c.seed)
  return {"train": (x[order[num_val:]], y[order[num_val:]]),
          "validation": (x[order[:num_val]], y[order[:num_val]]), "test": (x_test, y_test)}


def _batch(x, y) -> dict:
  return {"inputs": jnp.asarray(x), "targets": jnp.asarray(y),
          "weights": jnp.ones(len(y), jnp.float32)}


def _sampler(data: dict, batch_size: int, seed: int):
  x, y = data["train"]
  rng = np.random.default_rng(seed)
  rows = []

  def next_batch(_):
    if len(rows) < batch_size:
      rows.extend(rng.permutation(len(y)))
    chosen = [rows.pop() for _ in range(batch_size)]
    return _batch(x[chosen], y[chosen])

  return next_batch


def make_optimizer(method: str, lr: float, t, partition) -> optax.GradientTransformation:
  """Adam-mini with the proposed partition, or optax.adamw; same schedule and decay mask."""
  schedule = _schedule(lr, t.warmup_steps, t.steps)
  if method == "adam_mini":
    return adam_mini(schedule, weight_decay=t.weight_decay, weight_decay_mask=decay_mask,
                     partition=partition)
  return optax.adamw(schedule, weight_decay=t.weight_decay, mask=decay_mask)


def make_evaluate(graphdef):
  """evaluate(params, data) -> mean cross-entropy and accuracy on each split (jitted)."""

  @jax.jit
  def metrics(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)

  def evaluate(params, data: dict) -> dict:
    out = {}
    for split, (x, y) in data.items():
      loss, accuracy = metrics(params, x, y)
      out[f"{split}_loss"], out[f"{split}_accuracy"] = float(loss), float(accuracy)
    return out

  return evaluate


def train_run(c, data, method: str, lr: float, seed: int, step_fn, optimizer, evaluate,
              writer) -> dict:
  """One training run of the CNN; the project's train step, jitted once per (method, lr)."""
  t = c.train
  params = _split(CNN(c.cnn.channels, rngs=nnx.Rngs(seed)))[1]
  state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  next_batch = _sampler(data, t.batch_size, seed)
  curve = []
  for i in range(t.steps):
    state, metrics = step_fn(state, next_batch(i))
    curve.append(float(metrics["loss"]))
    if (i + 1) % t.log_every == 0:
      writer.write(i + 1, {f"cnn/{method}/lr={lr:g}/seed={seed}/train_loss":
                           np.mean(curve[-t.log_every:])})
  return {"curve": curve, **evaluate(state.params, data)}


def interval(values) -> dict:
  """Mean and 95% Student-t confidence interval over seeds."""
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return {"mean": mean, "ci95": None, "values": values.tolist()}
  t = scipy.stats.t.ppf(0.975, len(values) - 1)
  half = float(t * values.std(ddof=1) / np.sqrt(len(values)))
  return {"mean": mean, "ci95": [mean - half, mean + half], "half_width": half,
          "values": values.tolist()}


def sweep(c, data, partition, writer) -> dict:
  """Every (method, lr, seed); the best lr of each method by mean validation loss."""
  t = c.train
  graphdef = _split(CNN(c.cnn.channels, rngs=nnx.Rngs(0)))[0]
  evaluate = make_evaluate(graphdef)
  runs = {}
  total = 2 * len(t.lrs) * len(t.seeds)
  bar = tqdm.tqdm(total=total, desc="[cnn] Adam-mini vs AdamW", unit="run")
  for method in ("adam_mini", "adamw"):
    for lr in t.lrs:
      optimizer = make_optimizer(method, lr, t, partition)
      step_fn = jax.jit(make_train_step(graphdef, optimizer, lambda count: 0.0))
      runs[(method, lr)] = []
      for seed in t.seeds:
        runs[(method, lr)].append(train_run(c, data, method, lr, seed, step_fn, optimizer,
                                            evaluate, writer))
        bar.update()
      bar.set_postfix_str(f"{method} lr={lr:g} val "
                          f"{np.mean([r['validation_loss'] for r in runs[(method, lr)]]):.3f}")
  bar.close()
  return runs


def summarize(runs: dict, t) -> dict:
  """Per method: the grid, the best lr and its figures with CIs; Adam-mini minus AdamW."""
  out = {}
  for method in ("adam_mini", "adamw"):
    grid = {f"{lr:g}": {k: interval([r[k] for r in runs[(method, lr)]])["mean"]
                        for k in ("validation_loss", "validation_accuracy")} for lr in t.lrs}
    best = min(t.lrs, key=lambda lr: np.nan_to_num(grid[f"{lr:g}"]["validation_loss"],
                                                   nan=np.inf))
    chosen = runs[(method, best)]
    out[method] = {"best_lr": best, "grid": grid, **{
        k: interval([r[k] for r in chosen])
        for k in ("train_loss", "train_accuracy", "validation_loss", "test_loss",
                  "test_accuracy")}}
  pairs = zip(runs[("adam_mini", out["adam_mini"]["best_lr"])],
              runs[("adamw", out["adamw"]["best_lr"])])
  pairs = list(pairs)
  out["adam_mini_minus_adamw"] = {
      k: interval([a[k] - b[k] for a, b in pairs])
      for k in ("train_loss", "test_loss", "test_accuracy")}
  return out


def plot_cnn(runs: dict, summary: dict, t, path: str) -> None:
  """Train-loss curves at the best lrs (mean over seeds, min-max band), the lr grid, test acc."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for method, color in (("adam_mini", "C0"), ("adamw", "C1")):
    best = summary[method]["best_lr"]
    curves = np.asarray([r["curve"] for r in runs[(method, best)]])
    width = max(1, min(20, curves.shape[1] // 10))
    kernel = np.ones(width) / width
    smooth = np.asarray([np.convolve(cv, kernel, mode="valid") for cv in curves])
    steps = np.arange(smooth.shape[1]) + width
    axes[0].plot(steps, smooth.mean(0), color=color, label=f"{method} lr={best:g}")
    axes[0].fill_between(steps, smooth.min(0), smooth.max(0), color=color, alpha=0.2)
    grid = [np.mean([r["validation_loss"] for r in runs[(method, lr)]]) for lr in t.lrs]
    axes[1].plot(t.lrs, grid, marker="o", color=color, label=method)
    acc = summary[method]["test_accuracy"]
    err = acc["half_width"] if acc["ci95"] else 0.0
    axes[2].bar(method, acc["mean"], yerr=err, color=color, capsize=6)
  axes[0].set_yscale("log")
  plots.label_axes(axes[0], "step", "train loss (minibatch)", "CNN on digits, best lr")
  axes[1].set_xscale("log")
  axes[1].set_yscale("log")
  plots.label_axes(axes[1], "peak learning rate", "final validation loss", "learning-rate grid")
  axes[2].set_ylim(max(0.0, min(summary[m]["test_accuracy"]["mean"] for m in ("adam_mini",
                                                                                "adamw")) - 0.1),
                   1.0)
  axes[2].set_ylabel("test accuracy (95% CI)")
  axes[2].set_title(f"{len(t.seeds)} seeds")
  plots.save_figure(fig, path, dpi=110)


def cnn_part(c, workdir: str, writer, key) -> dict:
  """(b) Proposes a partition for the CNN; Adam-mini with it vs AdamW."""
  data = digits_splits(c)
  graphdef, params = _split(CNN(c.cnn.channels, rngs=nnx.Rngs(c.seed)))
  optimizer = optax.adamw(_schedule(c.cnn.probe_lr, 1, c.cnn.probe_train_steps))
  advance, _ = make_trainer(graphdef, optimizer, params,
                            _sampler(data, c.train.batch_size, c.seed), writer, "cnn",
                            c.train.log_every)
  params = advance(c.cnn.probe_train_steps)
  x, y = data["train"]
  rows = np.random.default_rng(c.seed + 1).choice(len(y), c.cnn.hessian_batch_size, False)
  partition, report, seconds = probe(_mean_loss(graphdef), params, _batch(x[rows], y[rows]), c,
                                     key, None, "cnn")
  outputs.write_json(os.path.join(workdir, "partition_report_cnn.json"), report)
  proposed = {name: f"{e['chosen']} ({e['num_blocks']} blocks)" for name, e in report.items()}
  print("[cnn] proposed partition:\n" + "\n".join(f"  {k:20s} {v}" for k, v in proposed.items()),
        flush=True)
  runs = sweep(c, data, partition, writer)
  summary = summarize(runs, c.train)
  plot_cnn(runs, summary, c.train, os.path.join(workdir, "cnn_training.png"))
  for method in ("adam_mini", "adamw"):
    s = summary[method]
    print(f"[cnn] {method}: lr {s['best_lr']:g}, train loss {_fmt(s['train_loss'])}, "
          f"test accuracy {_fmt(s['test_accuracy'])}", flush=True)
  num_v = sum(e["num_blocks"] for e in report.values())
  return {"proposed": proposed, "probe_seconds": seconds, "num_params": int(sum(
      np.size(p) for p in jax.tree.leaves(params))), "adam_mini_v_entries": int(num_v),
          **summary}


def _fmt(stat: dict) -> str:
  if stat["ci95"] is None:
    return f"{stat['mean']:.4f}"
  return f"{stat['mean']:.4f} [{stat['ci95'][0]:.4f}, {stat['ci95'][1]:.4f}]"


# ----------------------------------------------------------------------------- main

PARTS = {"gpt": gpt_part, "cnn": cnn_part}


def run(config, workdir: str) -> dict:
  """Runs the parts in `config.parts`; writes config.json, metrics.jsonl and summary.json.

  Args:
    config: a config from configs/measured_partition.py.
    workdir: the output directory.

  Returns:
    The summary.
  """
  unknown = set(config.parts) - set(PARTS)
  if unknown:
    raise ValueError(f"config.parts: unknown parts {sorted(unknown)}; choose from {sorted(PARTS)}")
  outputs.write_config(config, workdir)
  writer = MetricWriter(workdir)
  key = jax.random.key(config.seed)
  summary = {}
  start = time.time()
  for i, name in enumerate(config.parts):
    part_start = time.time()
    summary[name] = PARTS[name](config, workdir, writer, jax.random.fold_in(key, i))
    summary[name]["wall_seconds"] = time.time() - part_start
  writer.close()
  summary["wall_seconds"] = time.time() - start
  summary["devices"] = [str(d) for d in jax.devices()]
  outputs.write_summary(summary, workdir)
  return summary


def main(argv):
  del argv
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  brief = {"wall_seconds": summary["wall_seconds"]}
  if "gpt" in summary:
    brief["gpt"] = {k: summary["gpt"][k] for k in ("matched", "total", "tolerance_sweep")}
  if "cnn" in summary:
    brief["cnn"] = {m: {k: summary["cnn"][m][k] for k in ("best_lr", "train_loss",
                                                           "test_accuracy")}
                    for m in ("adam_mini", "adamw")}
    brief["cnn"]["adam_mini_minus_adamw"] = summary["cnn"]["adam_mini_minus_adamw"]
  print(json.dumps(brief, indent=2), flush=True)


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program, so that tests can import `run`.
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
