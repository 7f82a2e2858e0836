r"""A partition measured from the Hessian: recovered on GPT-2, proposed for a CNN, trained with.

  python -m experiments.measured_partition --config=configs/measured_partition.py --workdir=/tmp/mp

gpt: this project's tiny GPT-2, trained with AdamW and probed with `hessian.propose_partition`
  at several steps (stacked layers declared on axis 0 under `layers`); per leaf, the proposal
  against the paper's partition (EXPECTED_GPT below), matched / total (the headline at
  `gpt.report_step`), and the count again at other tolerances and with the other criterion
  (re-selected from the same measurements). Each probe step is a trainer run
  (`train_and_evaluate`) of that many steps in workdir/gpt/step<N> (a warmup-then-constant
  learning rate, so the runs share their first steps), probed as its `final_metrics`.
cnn: the partition proposed for the digits CNN (after a short AdamW run through the trainer in
  workdir/cnn/probe_run), saved as partition_report_cnn.json, then Adam-mini with it
  (`opt.name=adam_mini`, `opt.partition_report=` that file: the factory's way to a measured
  partition) vs AdamW, every run through the trainer in workdir/cnn/<method>_lr<lr>_seed<seed>:
  the learning rate of each tuned on a validation split over one grid (`sweep.lrs`), several
  seeds (`sweep.seeds`), final train loss and test accuracy with 95% confidence intervals
  (Student t).
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
import tqdm
from absl import app, flags
from flax import nnx

from bigmodel_jax import hessian
from bigmodel_jax.data import ByteTokenizer, load_source, make_lm_dataset
from bigmodel_jax.data.digits import digits_splits
from bigmodel_jax.hessian import measured_partition as mp
from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.models.cnn import CNNConfig, create_cnn
from bigmodel_jax.train import builders, metrics, outputs, plots
from bigmodel_jax.train.classification import classification_task, split_metrics
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate
from bigmodel_jax.train.metrics import MetricWriter
from bigmodel_jax.train.task import Task, language_model_task, mean_train_loss
from experiments import cli
from experiments.sweeps import interval, train_run

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


# The config's sections only this experiment reads (dropped from each trainer run's config).
OWN_SECTIONS = ("parts", "probe", "gpt", "cnn", "sweep")


def _progress(bar):
  def callback(name, entry):
    bar.set_postfix_str(f"{name}: {entry['chosen']}")
    bar.update()
  return callback


def probe(loss, params, batch, c, key, layer_axes, label: str) -> dict:
  """`propose_partition` on the loss of one fixed batch, with a progress bar over leaves.

  One batch is closed over directly: `hessian.mean_loss` scans over batches, and a vmapped
  HVP through that scan runs ~30x slower on CPU for the CNN (convolutions in a loop body).

  Returns:
    {"report": the proposal's report (JSON-able), "probe_seconds"}.
  """
  p = c.probe
  bar = tqdm.tqdm(total=len(jax.tree.leaves(params)), desc=f"[{label}] probing", unit="leaf")
  start = time.time()
  _, report = hessian.propose_partition(
      lambda params: loss(params, batch), params, key, layer_axes=layer_axes,
      num_probes=p.num_probes, tolerance=p.tolerance, head_sizes=tuple(p.head_sizes) or None,
      criterion=p.criterion, probe_batch=p.probe_batch, compile_per_leaf=p.compile_per_leaf,
      callback=_progress(bar))
  bar.close()
  return {"report": report, "probe_seconds": time.time() - start}


def probed_run(config, run_dir: str, task: Task, probe_at) -> dict:
  """Trains `task` through the trainer, then probes its final parameters.

  Args:
    config: the run's config.
    run_dir: its directory (a finished run there keeps its summary, and so its probe).
    task: the Task.
    probe_at: (graphdef, params) -> `probe`'s result.

  Returns:
    The trainer's summary; "final_metrics" is the probe's result.
  """
  return train_and_evaluate(config, run_dir, task=task, final_metrics=probe_at)


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


def gpt_run_config(c, steps: int):
  """The trainer's config of the GPT's run of `steps` steps: AdamW at `gpt.lr` after
  `gpt.warmup_steps` of linear warmup, then constant; no weight decay; clipped at 1."""
  g = c.gpt
  return derive(c, drop=OWN_SECTIONS, values={
      "opt.name": "adamw", "opt.lr": g.lr, "opt.warmup_steps": g.warmup_steps,
      "opt.schedule": "warmup_constant", "opt.weight_decay": 0.0, "opt.max_grad_norm": 1.0,
      "train.steps": steps, "train.global_batch_size": g.global_batch_size,
      "train.log_every": g.log_every, "train.eval_every": steps,
      "train.checkpoint_every": steps})


def _hessian_batch(c) -> dict:
  """The GPT's probed batch: `gpt.hessian_batch_size` rows of the validation split."""
  source = load_source(c.data.name, data_dir=c.data.data_dir or None, split="validation")
  it = make_lm_dataset(source=source, tokenizer=ByteTokenizer(), split="validation",
                       seq_len=c.data.seq_len, global_batch_size=c.gpt.hessian_batch_size,
                       seed=c.seed, num_batches=1)
  return {k: jnp.asarray(v) for k, v in next(it).items()}


def gpt_part(c, workdir: str, writer, key) -> dict:
  """(a) Trains the tiny GPT-2, proposes a partition at each probe step, compares each."""
  g = c.gpt
  if g.report_step not in g.probe_steps:
    raise ConfigError(f"gpt.report_step ({g.report_step}) must be one of gpt.probe_steps "
                      f"{tuple(g.probe_steps)}")
  data = builders.make_data(gpt_run_config(c, max(g.probe_steps)))
  task = language_model_task(builders.model_config(c.model, data.tokenizer.vocab_size), data)
  hessian_batch = _hessian_batch(c)
  reports, by_step, curve = {}, {}, []
  for step in sorted(g.probe_steps):
    label = f"gpt step {step}"

    def probe_at(graphdef, params, step=step, label=label):
      return probe(mean_train_loss(task, graphdef), params, hessian_batch, c,
                   jax.random.fold_in(key, step), LAYER_AXES, label)

    if step == 0:  # the initialisation: what the trainer starts every run from
      graphdef, state = nnx.split(task.create_model(task.model_config, nnx.Rngs(c.seed)),
                                  nnx.Param)
      probed, losses = probe_at(graphdef, nnx.to_pure_dict(state)), []
    else:
      run_dir = os.path.join(workdir, "gpt", f"step{step}")
      probed = probed_run(gpt_run_config(c, step), run_dir, task, probe_at)["final_metrics"]
      curve = [(r["step"], r["loss"]) for r in metrics.read_metrics(run_dir) if "loss" in r]
      losses = [loss for _, loss in curve]
    reports[step], seconds = probed["report"], probed["probe_seconds"]
    rows = compare(reports[step], EXPECTED_GPT)
    matched, total = _matched(rows)
    _print_table(rows, step, matched, total, seconds)
    writer.write(step, {"gpt/matched_leaves": matched, "gpt/compared_leaves": total})
    by_step[str(step)] = {
        "matched": matched, "total": total, "probe_seconds": seconds,
        "train_loss": float(losses[-1]) if losses else None,
        "proposed": {r["leaf"]: r["proposed"] for r in rows},
        "tolerance_sweep": tolerance_sweep(reports[step], c.probe.tolerance_sweep)}
    plot_candidates(reports[step], list(EXPECTED_GPT),
                    os.path.join(workdir, f"gpt_leakage_step{step}.png"), c.probe.tolerance,
                    f"tiny GPT-2 after {step} steps: matched {matched}/{total}")
  outputs.write_json(os.path.join(workdir, "partition_report_gpt.json"),
                     {str(step): report for step, report in reports.items()})
  plots.plot_loss_curves([{"step": s, "loss": v} for s, v in curve],
                         os.path.join(workdir, "gpt_pretrain_loss.png"),
                         "tiny GPT-2: AdamW, probed at " + ", ".join(map(str, g.probe_steps)))
  headline = by_step[str(g.report_step)]
  return {"report_step": g.report_step, "matched": headline["matched"],
          "total": headline["total"], "table": compare(reports[g.report_step], EXPECTED_GPT),
          "tolerance_sweep": headline["tolerance_sweep"], "by_step": by_step}


# ----------------------------------------------------------------------------- (b) CNN

EVAL_BATCH = 512  # images per batch of the final evaluation of every split
METHODS = ("adam_mini", "adamw")  # the factory's names; adam_mini with the measured partition


def cnn_task(c, splits: dict, seed: int) -> Task:
  """The CNN on the digits' train split, evaluated (by the trainer) on the validation split."""
  return classification_task(CNNConfig(tuple(c.cnn.channels)), create_cnn, splits["train"],
                             splits["validation"], c.train.global_batch_size, seed, "cnn")


def cnn_run_config(c, method: str, lr: float, seed: int, partition_report: str):
  """The trainer's config of one run of the comparison (`opt.partition_report` for Adam-mini)."""
  return derive(c, drop=(*OWN_SECTIONS, "model", "data"), values={
      "opt.name": method, "opt.lr": lr, "seed": seed,
      "opt.partition_report": partition_report if method == "adam_mini" else ""})


def sweep(c, splits: dict, partition_report: str, workdir: str) -> dict:
  """Every (method, lr, seed) through the trainer; {(method, lr): [one row per seed]} with the
  final figures of each split (train / validation / test loss and accuracy) and the curve."""
  tasks = {seed: cnn_task(c, splits, seed) for seed in c.sweep.seeds}
  evaluate = lambda graphdef, params: split_metrics(graphdef, params, splits, EVAL_BATCH)
  runs = {}
  bar = tqdm.tqdm(total=len(METHODS) * len(c.sweep.lrs) * len(c.sweep.seeds),
                  desc="[cnn] Adam-mini vs AdamW", unit="run")
  for method in METHODS:
    for lr in c.sweep.lrs:
      runs[(method, lr)] = []
      for seed in c.sweep.seeds:
        row = train_run(cnn_run_config(c, method, lr, seed, partition_report),
                        os.path.join(workdir, "cnn", f"{method}_lr{lr:g}_seed{seed}"),
                        tasks[seed], evaluate)
        # a diverged run: infinite losses, no accuracy
        figures = row["final_metrics"] or {f"{s}_{k}": (np.inf if k == "loss" else 0.0)
                                           for s in splits for k in ("loss", "accuracy")}
        runs[(method, lr)].append({"curve": row["curve"], **figures})
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


def plot_cnn(runs: dict, summary: dict, c, path: str) -> None:
  """Logged train losses at the best lrs (mean over seeds, min-max band), the lr grid, test acc."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for method, color in (("adam_mini", "C0"), ("adamw", "C1")):
    best = summary[method]["best_lr"]
    length = min(len(r["curve"]) for r in runs[(method, best)])
    steps = [s for s, _ in runs[(method, best)][0]["curve"][:length]]
    curves = np.asarray([[v for _, v in r["curve"][:length]] for r in runs[(method, best)]])
    axes[0].plot(steps, curves.mean(0), color=color, label=f"{method} lr={best:g}")
    axes[0].fill_between(steps, curves.min(0), curves.max(0), color=color, alpha=0.2)
    grid = [np.mean([r["validation_loss"] for r in runs[(method, lr)]]) for lr in c.sweep.lrs]
    axes[1].plot(c.sweep.lrs, grid, marker="o", color=color, label=method)
    acc = summary[method]["test_accuracy"]
    err = acc["half_width"] if acc["ci95"] else 0.0
    axes[2].bar(method, acc["mean"], yerr=err, color=color, capsize=6)
  axes[0].set_yscale("log")
  plots.label_axes(axes[0], "step", "train loss (minibatch)", "CNN on digits, best lr")
  axes[1].set_xscale("log")
  axes[1].set_yscale("log")
  plots.label_axes(axes[1], "peak learning rate", "final validation loss", "learning-rate grid")
  axes[2].set_ylim(max(0.0, min(summary[m]["test_accuracy"]["mean"] for m in METHODS) - 0.1),
                   1.0)
  axes[2].set_ylabel("test accuracy (95% CI)")
  axes[2].set_title(f"{len(c.sweep.seeds)} seeds")
  plots.save_figure(fig, path, dpi=110)


def cnn_probe_config(c):
  """The trainer's config of the short AdamW run before probing the CNN."""
  return derive(c, drop=(*OWN_SECTIONS, "model", "data"), values={
      "opt.name": "adamw", "opt.lr": c.cnn.probe_lr, "opt.warmup_steps": 1,
      "train.steps": c.cnn.probe_train_steps, "train.eval_every": c.cnn.probe_train_steps,
      "train.checkpoint_every": c.cnn.probe_train_steps})


def cnn_part(c, workdir: str, writer, key) -> dict:
  """(b) Proposes a partition for the CNN; Adam-mini with it vs AdamW."""
  del writer
  splits = digits_splits(c.seed, c.cnn.validation_fraction)
  task = cnn_task(c, splits, c.seed)
  x, y = splits["train"]
  rows = np.random.default_rng(c.seed + 1).choice(len(y), c.cnn.hessian_batch_size, False)
  batch = {"inputs": jnp.asarray(x[rows]), "targets": jnp.asarray(y[rows]),
           "weights": jnp.ones(len(rows), jnp.float32)}
  probe_summary = probed_run(
      cnn_probe_config(c), os.path.join(workdir, "cnn", "probe_run"), task,
      lambda graphdef, params: probe(mean_train_loss(task, graphdef), params, batch, c, key, None,
                                     "cnn"))
  report, seconds = (probe_summary["final_metrics"][k] for k in ("report", "probe_seconds"))
  report_path = os.path.join(workdir, "partition_report_cnn.json")
  outputs.write_json(report_path, report)
  proposed = {name: f"{e['chosen']} ({e['num_blocks']} blocks)" for name, e in report.items()}
  print("[cnn] proposed partition:\n" + "\n".join(f"  {k:20s} {v}" for k, v in proposed.items()),
        flush=True)
  runs = sweep(c, splits, os.path.abspath(report_path), workdir)
  summary = summarize(runs, c.sweep)
  plot_cnn(runs, summary, c, os.path.join(workdir, "cnn_training.png"))
  for method in METHODS:
    s = summary[method]
    print(f"[cnn] {method}: lr {s['best_lr']:g}, train loss {_fmt(s['train_loss'])}, "
          f"test accuracy {_fmt(s['test_accuracy'])}", flush=True)
  num_v = sum(e["num_blocks"] for e in report.values())
  return {"proposed": proposed, "probe_seconds": seconds,
          "num_params": probe_summary["num_params"], "adam_mini_v_entries": int(num_v),
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
    raise ConfigError(f"config.parts: unknown parts {sorted(unknown)}; choose from {sorted(PARTS)}")
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


# The config's top-level keys (experiments/cli.py refuses any other): the trainer's (less
# `loss`: the tasks are given) and the experiment's own.
READS = (*(k for k in TRAINER_READS if k != "loss"), *OWN_SECTIONS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  brief = {"wall_seconds": summary["wall_seconds"]}
  if "gpt" in summary:
    brief["gpt"] = {k: summary["gpt"][k] for k in ("matched", "total", "tolerance_sweep")}
  if "cnn" in summary:
    brief["cnn"] = {m: {k: summary["cnn"][m][k] for k in ("best_lr", "train_loss",
                                                           "test_accuracy")}
                    for m in METHODS}
    brief["cnn"]["adam_mini_minus_adamw"] = summary["cnn"]["adam_mini_minus_adamw"]
  print(json.dumps(brief, indent=2), flush=True)


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program, so that tests can import `run`.
  cli.define_config_and_workdir()
  cli.run(main, reads=READS)
