r"""Block-Hessian diagnostics experiments (Zhang et al., "Why Transformers Need Adam", 2024).

  python -m experiments.hessian --config=configs/hessian_heterogeneity.py --workdir=/tmp/hh
  python -m experiments.hessian --config=configs/hessian_quadratic.py --workdir=/tmp/hq

heterogeneity: SLQ block spectra at initialisation of a small GPT (stdlib corpus), a CNN and an
  MLP (scikit-learn digits); JS matrices and JS0 (bounded and paper-compatible variants); SGD
  with momentum vs AdamW at their best swept learning rates (final-loss gap, mean and 95%
  interval over `sweep.seeds`); HVP / gradient cost and block-spectra wall time on the GPT.
  Every training run of the sweep goes through the trainer (`train_and_evaluate`, its optimizer
  from the factory: `opt.*` as everywhere) in workdir/runs/<model>/<optimizer>_lr<lr>_seed<seed>,
  so a rerun resumes the sweep where it stopped.
quadratic: block-diagonal quadratics, heterogeneous vs homogeneous block spectra; iterations of
  GD (best step), Adam and Adam-mini (best learning rates) to a fixed relative loss. No network
  is trained: the three methods are the update rules of a closed-form quadratic, run as one
  jitted `lax.scan` per method over its learning-rate grid (a solver, not a model's training
  loop), so this part has neither `train` nor `opt` sections.
Outputs in the workdir: config.json, summary.json, metrics.jsonl (+ TensorBoard), PNG plots.
"""

import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import tqdm
from absl import app, flags
from flax import nnx

from bigmodel_jax import hessian
from bigmodel_jax.data.digits import digits_splits
from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.models.classifier_mlp import ClassifierMLPConfig, create_classifier_mlp
from bigmodel_jax.models.cnn import CNNConfig, create_cnn
from bigmodel_jax.train import builders, outputs, plots
from bigmodel_jax.train.classification import classification_task
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.errors import ConfigError
from bigmodel_jax.train.loop import TRAINER_READS
from bigmodel_jax.train.metrics import MetricWriter
from bigmodel_jax.train.task import Task, language_model_task, mean_train_loss
from experiments import cli, sweeps

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# ----------------------------------------------------------------------------- tasks

# The heterogeneity config's sections that only this experiment reads (not the trainer's).
OWN_SECTIONS = ("experiment", "models", "gpt", "cnn", "mlp", "spectrum", "speed", "sweep")


def make_task(c, label: str, split_seed: int) -> Task:
  """The trainer's task of one model: the GPT on the stdlib corpus, or the CNN / MLP on digits.

  Args:
    c: the heterogeneity config (or a run's config derived from it); `c.seed` orders the data.
    label: "gpt", "cnn" or "mlp".
    split_seed: seed of the digits' train/test split (the same for every run).

  Returns:
    The Task.
  """
  if label == "gpt":
    data = builders.make_data(c)
    return language_model_task(builders.model_config(c.model, data.tokenizer.vocab_size), data)
  if label == "cnn":
    model_config, create = CNNConfig(tuple(c.cnn.channels)), create_cnn
  else:
    model_config, create = ClassifierMLPConfig(tuple(c.mlp.hidden)), create_classifier_mlp
  splits = digits_splits(split_seed)
  return classification_task(model_config, create, splits["train"], splits["test"],
                             c.train.global_batch_size, c.seed, label)


def _hessian_batches(task: Task, s) -> list[dict]:
  """The Hessian's fixed batches: the first `spectrum.num_batches` x `spectrum.batch_size`
  training examples of the task's data."""
  it, batches = task.data.train_iterator(), []
  need = s.batch_size * s.num_batches
  while sum(len(b["targets"]) for b in batches) < need:
    batches.append(next(it))
  rows = {k: np.concatenate([b[k] for b in batches])[:need] for k in batches[0]}
  return [{k: jnp.asarray(v[i * s.batch_size:(i + 1) * s.batch_size]) for k, v in rows.items()}
          for i in range(s.num_batches)]


def probe_view(c, label: str, task: Task) -> dict:
  """What the spectra and the speed test take of the task's model at initialisation (seed
  `c.seed`): params, its mean loss, the compared blocks and the Hessian's batches."""
  graphdef, state = nnx.split(task.create_model(task.model_config, nnx.Rngs(c.seed)), nnx.Param)
  params = nnx.to_pure_dict(state)
  if label == "gpt":
    blocks = hessian.list_blocks(params, layer_axes=LAYER_AXES)
    chosen = (hessian.select_blocks(blocks, c.gpt.block_patterns, c.gpt.block_layers)
              + hessian.select_blocks(blocks, c.gpt.extra_blocks))
  else:
    chosen = hessian.select_blocks(hessian.list_blocks(params), c[label].block_patterns)
  return dict(params=params, loss=mean_train_loss(task, graphdef), blocks=chosen,
              hessian=_hessian_batches(task, c.spectrum))


# ----------------------------------------------------------------------------- spectra


def spectra(task: dict, c, key, label: str, workdir: str) -> tuple[dict, dict]:
  """SLQ spectra of the task's blocks (and whole model) at its parameters, in float64 Lanczos."""
  s = c.spectrum
  loss_fn = hessian.mean_loss(task["loss"], task["hessian"])
  bar = tqdm.tqdm(total=len(task["blocks"]), desc=f"[{label}] block spectra", unit="block")
  start = time.time()
  with jax.enable_x64(True):
    block_spectra = hessian.block_spectra(
        loss_fn, task["params"], task["blocks"], key, s.num_probes, s.num_steps, s.reorth,
        callback=lambda i, b: (bar.update(), bar.set_postfix_str(b.name)))
    block_seconds = time.time() - start
    whole = (hessian.model_spectrum(loss_fn, task["params"], jax.random.fold_in(key, 1 << 20),
                                    s.num_probes, s.num_steps, s.reorth)
             if s.whole_model else None)
  bar.close()
  np.savez(os.path.join(workdir, f"spectra_{label}.npz"),
           **{f"{n}/nodes": sp.nodes for n, sp in block_spectra.items()},
           **{f"{n}/weights": sp.weights for n, sp in block_spectra.items()},
           **({"whole/nodes": whole.nodes, "whole/weights": whole.weights} if whole else {}))
  # The blocks share one grid (JS needs it); the whole model, whose range is far wider, gets its
  # own, so it does not coarsen the blocks' grid.
  grid = hessian.make_grid(list(block_spectra.values()), s.grid_points, s.sigma2, s.overhead)
  het = hessian.heterogeneity(block_spectra, grid)
  out = {"js0": het["js0"], "grid": het["grid"], "blocks": het["names"],
         "block_sizes": [b.size for b in task["blocks"]],
         "top_eigenvalues": {n: hessian.top_eigenvalue(sp) for n, sp in block_spectra.items()},
         "js_matrix": {v: m.tolist() for v, m in het["js"].items()},
         "block_spectra_seconds": block_seconds, "num_probes": s.num_probes,
         "num_steps": s.num_steps, "reorth": s.reorth, "lanczos_dtype": "float64",
         "hessian_tokens_or_examples": s.batch_size * s.num_batches}
  if whole is not None:
    out["whole_model_top_eigenvalue"] = hessian.top_eigenvalue(whole)
    whole_grid = hessian.make_grid([whole], s.grid_points, s.sigma2, s.overhead)
    het["whole"] = (hessian.density(whole, whole_grid), whole_grid.describe())
  print(f"[{label}] JS0 bounded {out['js0']['bounded']:.4f}  paper {out['js0']['paper']:.2f}  "
        f"({len(task['blocks'])} blocks in {block_seconds:.0f} s)", flush=True)
  return out, het


def plot_spectra(het: dict, path: str, title: str) -> None:
  """One panel per block (log density) on the blocks' common grid, plus the whole model."""
  panels = [(name, rho, het["grid"]) for name, rho in zip(het["names"], het["densities"])]
  if "whole" in het:
    panels.append(("whole model (own grid)", *het["whole"]))
  cols = 4
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
  for ax, (name, rho, grid) in zip(axes.flat, panels):
    ax.semilogy(np.linspace(grid["lo"], grid["hi"], grid["num_points"]), np.maximum(rho, 1e-12))
    ax.set_ylim(1e-8, None)
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("eigenvalue", fontsize=7)
    ax.set_ylabel("density (SLQ)", fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.suptitle(f"{title}  (sigma2={het['grid']['sigma2']:g}, {het['grid']['num_points']} pts)")
  plots.save_figure(fig, path, dpi=110)


def plot_js(het: dict, path: str, title: str) -> None:
  """The bounded JS distance matrix as a heatmap."""
  m = het["js"]["bounded"]
  side = max(4.5, 0.45 * len(m))  # room for the title and block names even with few blocks
  fig, ax = plt.subplots(figsize=(side + 1.5, side + 1))
  im = ax.imshow(m, vmin=0, vmax=np.sqrt(np.log(2)), cmap="viridis")
  ax.set_xticks(range(len(m)), het["names"], rotation=90, fontsize=7)
  ax.set_yticks(range(len(m)), het["names"], fontsize=7)
  ax.set_xlabel("block")
  ax.set_ylabel("block")
  ax.set_title(f"{title}\nJS0 {het['js0']['bounded']:.3f} (bounded), "
               f"{het['js0']['paper']:.1f} (paper)", fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.046, label="JS distance")
  plots.save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------------- training

OPTIMIZERS = ("sgd", "adamw")  # the factory's names; learning rates sweep.<name>_lrs


def run_config(c, name: str, lr: float, seed: int, label: str):
  """The trainer's config of one run: `opt.name`, `opt.lr` and `seed` set, the experiment's own
  sections left out (and the GPT's `model` and `data` for a digits model)."""
  drop = OWN_SECTIONS + (() if label == "gpt" else ("model", "data"))
  return derive(c, drop=drop, values={"opt.name": name, "opt.lr": lr, "seed": seed})


def _run_dir(workdir: str, label: str, name: str, lr: float, seed: int) -> str:
  return os.path.join(workdir, "runs", label, f"{name}_lr{lr:g}_seed{seed}")


def sweep(c, label: str, workdir: str, tasks: dict) -> dict:
  """SGD (momentum) and AdamW over their learning-rate grids and `sweep.seeds`, each run through
  the trainer; the best learning rate of each by mean eval loss over the seeds.

  Args:
    c: the heterogeneity config.
    label: the model.
    workdir: the experiment's directory.
    tasks: {seed: the model's Task with that seed's data order}.

  Returns:
    Per optimizer: best_lr, best (mean eval_loss / final_train_loss at it, with 95% intervals,
    and the mean logged curve), sweep (per lr: the means and each seed's row); the gaps
    SGD minus AdamW (means, and the interval of the per-seed differences).
  """
  seeds = list(c.sweep.seeds)
  out = {}
  for name in OPTIMIZERS:
    runs = {}
    for lr in c.sweep[f"{name}_lrs"]:
      runs[lr] = [sweeps.train_run(run_config(c, name, lr, seed, label),
                                   _run_dir(workdir, label, name, lr, seed), tasks[seed])
                  for seed in seeds]
    mean = {lr: float(np.mean([r["eval_loss"] for r in rs])) for lr, rs in runs.items()}
    best = min(runs, key=lambda lr: mean[lr])
    chosen = runs[best]
    out[name] = {
        "best_lr": best,
        "best": {"eval_loss": mean[best],
                 "final_train_loss": float(np.mean([r["final_train_loss"] for r in chosen])),
                 "eval_loss_interval": sweeps.interval([r["eval_loss"] for r in chosen]),
                 "final_train_loss_interval": sweeps.interval(
                     [r["final_train_loss"] for r in chosen]),
                 "curve": _mean_curve([r["curve"] for r in chosen])},
        "sweep": {f"{lr:g}": {"eval_loss": mean[lr],
                              "final_train_loss": float(np.mean([r["final_train_loss"]
                                                                 for r in rs])),
                              "seeds": {str(seed): {k: r[k] for k in ("eval_loss", "eval",
                                                                      "final_train_loss",
                                                                      "diverged")}
                                        for seed, r in zip(seeds, rs)}}
                  for lr, rs in runs.items()},
        "_runs": chosen}
    print(f"[{label}] {name}: best lr {best:g}, eval loss {mean[best]:.4f} "
          f"({len(seeds)} seed{'s' * (len(seeds) > 1)})", flush=True)
  sgd, adamw = out["sgd"].pop("_runs"), out["adamw"].pop("_runs")
  out["gap_eval_loss_sgd_minus_adamw"] = (out["sgd"]["best"]["eval_loss"]
                                          - out["adamw"]["best"]["eval_loss"])
  out["gap_train_loss_sgd_minus_adamw"] = (out["sgd"]["best"]["final_train_loss"]
                                           - out["adamw"]["best"]["final_train_loss"])
  out["gap_eval_loss_interval"] = sweeps.interval(
      [a["eval_loss"] - b["eval_loss"] for a, b in zip(sgd, adamw)])
  return out


def _mean_curve(curves: list) -> list:
  """[(step, mean loss over the seeds)] of logged [(step, loss)] curves (up to the shortest: a
  diverged run stops early)."""
  length = min(len(c) for c in curves)
  return [(curves[0][i][0], float(np.mean([c[i][1] for c in curves]))) for i in range(length)]


def plot_training(results: dict, path: str) -> None:
  """Logged training losses of the best SGD and AdamW runs (mean over seeds), one panel per
  model."""
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
  for ax, (label, r) in zip(axes[0], results.items()):
    for name in OPTIMIZERS:
      steps, losses = zip(*r[name]["best"]["curve"]) if r[name]["best"]["curve"] else ((), ())
      ax.plot(steps, losses, label=f"{name} lr={r[name]['best_lr']:g}")
    ax.set_title(f"{label}: gap {r['gap_eval_loss_sgd_minus_adamw']:.3f} nats")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.legend()
  plots.save_figure(fig, path, dpi=110)


def speed(task: dict, c) -> dict:
  """Median time of one HVP (whole model, and one block) over one gradient, same process."""
  params, loss = task["params"], task["loss"]
  batch = task["hessian"][0]
  loss_fn = lambda p: loss(p, batch)
  vector = jax.tree.map(jnp.ones_like, params)
  block = task["blocks"][0]
  leaf_v = jax.tree.leaves(vector)[block.leaf_index]
  fns = {"grad": jax.jit(jax.grad(loss_fn)),
         "hvp": jax.jit(lambda p: hessian.hvp(loss_fn, p, vector)),
         "block_hvp": jax.jit(lambda p: hessian.block_hvp(loss_fn, p, block, leaf_v))}
  times = {k: [] for k in fns}
  for fn in fns.values():
    jax.block_until_ready(fn(params))
  for _ in range(c.speed.repeats):
    for k, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(params))
      times[k].append(time.perf_counter() - start)
  med = {k: statistics.median(v) for k, v in times.items()}
  out = {"grad_seconds": med["grad"], "hvp_seconds": med["hvp"],
         "block_hvp_seconds": med["block_hvp"], "block": block.name,
         "hvp_over_grad": med["hvp"] / med["grad"],
         "block_hvp_over_grad": med["block_hvp"] / med["grad"]}
  print(f"[speed] HVP / grad = {out['hvp_over_grad']:.2f}, block HVP / grad = "
        f"{out['block_hvp_over_grad']:.2f}", flush=True)
  return out


def heterogeneity(c, workdir: str) -> dict:
  """Experiment 1: spectra and JS0 at initialisation, then SGD vs AdamW."""
  writer = MetricWriter(workdir)
  key = jax.random.key(c.seed)
  summary = {"spectra": {}, "training": {}}
  for label in c.models:
    tasks = {seed: make_task(derive(c, values={"seed": seed}), label, c.seed)
             for seed in {c.seed, *c.sweep.seeds}}
    task = probe_view(c, label, tasks[c.seed])
    num_params = sum(x.size for x in jax.tree.leaves(task["params"]))
    if label == "gpt" and c.speed.enabled:
      summary["speed"] = speed(task, c)
    out, het = spectra(task, c, jax.random.fold_in(key, len(summary["spectra"])), label,
                       workdir)
    out["num_params"] = int(num_params)
    summary["spectra"][label] = out
    plot_spectra(het, os.path.join(workdir, f"spectra_{label}.png"), f"{label} at init")
    plot_js(het, os.path.join(workdir, f"js_{label}.png"), label)
    writer.write(0, {f"js0_bounded/{label}": out["js0"]["bounded"],
                     f"js0_paper/{label}": out["js0"]["paper"]})
    summary["training"][label] = sweep(c, label, workdir, tasks)
  plot_training(summary["training"], os.path.join(workdir, "training.png"))
  for r in summary["training"].values():
    for name in OPTIMIZERS:
      r[name]["best"].pop("curve")
  writer.close()
  summary["table"] = {label: {"js0_bounded": summary["spectra"][label]["js0"]["bounded"],
                              "js0_paper": summary["spectra"][label]["js0"]["paper"],
                              "gap_eval_loss": summary["training"][label][
                                  "gap_eval_loss_sgd_minus_adamw"]} for label in c.models}
  return summary


# ----------------------------------------------------------------------------- quadratics


def make_quadratic(ranges, block_dim: int, kappa: float, key) -> tuple[list, jax.Array]:
  """Block matrices Q diag(lambda) Q' with log-uniform eigenvalues in kappa^range, and h."""
  keys = jax.random.split(key, 2 * len(ranges) + 1)
  mats = []
  for i, (lo, hi) in enumerate(ranges):
    u = jax.random.uniform(keys[2 * i], (block_dim,), jnp.float64)
    exps = lo + (hi - lo) * u
    exps = exps.at[0].set(lo).at[1].set(hi)
    eig = kappa ** exps
    q, _ = jnp.linalg.qr(jax.random.normal(keys[2 * i + 1], (block_dim, block_dim), jnp.float64))
    mats.append((q * eig) @ q.T)
  return mats, jax.random.normal(keys[-1], (len(ranges) * block_dim,), jnp.float64)


def run_quadratic(mats, h, method: str, lrs, c) -> jax.Array:
  """Relative loss gaps [len(lrs), max_iters // log_every] of GD / Adam / Adam-mini."""
  n, d = len(mats), mats[0].shape[0]
  big = jax.scipy.linalg.block_diag(*mats)
  w_star = jnp.linalg.solve(big, h)
  f = lambda w: 0.5 * w @ big @ w - h @ w
  f_star, f0 = f(w_star), 0.0

  def one(lr):
    def step(carry, t):
      w, m, v = carry
      g = big @ w - h
      if method == "gd":
        return (w - lr * g, m, v), None
      m = c.b1 * m + (1 - c.b1) * g
      sq = g * g if method == "adam" else jnp.repeat(jnp.mean((g * g).reshape(n, d), 1), d)
      v = c.b2 * v + (1 - c.b2) * sq
      mhat, vhat = m / (1 - c.b1 ** (t + 1)), v / (1 - c.b2 ** (t + 1))
      return (w - lr * mhat / (jnp.sqrt(vhat) + c.eps), m, v), None

    def block(carry, t0):
      carry, _ = jax.lax.scan(step, carry, t0 + jnp.arange(c.log_every))
      return carry, (f(carry[0]) - f_star) / (f0 - f_star)

    zeros = jnp.zeros_like(h)
    starts = jnp.arange(0, c.max_iters, c.log_every)
    return jax.lax.scan(block, (zeros, zeros, zeros), starts)[1]

  return jax.jit(jax.vmap(one))(jnp.asarray(lrs, jnp.float64))


def _iterations_text(iterations: int | None, max_iters: int) -> str:
  """"1200 it", or "not in 40000 it" for a run that never reached the target (None)."""
  return f"{iterations} it" if iterations is not None else f"not in {max_iters} it"


def quadratic(c, workdir: str) -> dict:
  """Experiment 2: iterations to a relative loss gap `target`, heterogeneous vs homogeneous."""
  writer = MetricWriter(workdir)
  summary, curves = {}, {}
  with jax.enable_x64(True):
    for case in ("heterogeneous", "homogeneous"):
      mats, h = make_quadratic(c[case], c.block_dim, c.kappa, jax.random.key(c.seed))
      eigs = np.concatenate([np.linalg.eigvalsh(np.asarray(m)) for m in mats])
      lam_max = float(eigs.max())
      row = {"condition_number": float(eigs.max() / eigs.min()),
             "block_ranges": [[float(np.linalg.eigvalsh(np.asarray(m)).min()),
                               float(np.linalg.eigvalsh(np.asarray(m)).max())] for m in mats]}
      methods = {"gd": [f / lam_max for f in c.gd_step_factors], "adam": list(c.adam_lrs),
                 "adam_mini": list(c.adam_lrs)}
      for method, lrs in tqdm.tqdm(methods.items(), desc=f"[quadratic] {case}"):
        gaps = np.asarray(run_quadratic(mats, h, method, lrs, c))
        reached = gaps <= c.target
        iters = np.where(reached.any(1), (reached.argmax(1) + 1) * c.log_every, np.inf)
        best = int(np.argmin(iters) if np.isfinite(iters).any() else np.argmin(gaps[:, -1]))
        row[method] = {"best_lr": float(lrs[best]),
                       "iterations_to_target": (int(iters[best]) if np.isfinite(iters[best])
                                                else None),
                       "final_gap": float(gaps[best, -1]),
                       "sweep": {f"{lr:g}": (int(i) if np.isfinite(i) else None)
                                 for lr, i in zip(lrs, iters)}}
        curves[(case, method)] = gaps[best]
        for j, gap in enumerate(gaps[best]):
          writer.write((j + 1) * c.log_every, {f"rel_gap/{case}/{method}": gap})
      summary[case] = row
      print(f"[quadratic] {case}: " + ", ".join(
          f"{m} {_iterations_text(row[m]['iterations_to_target'], c.max_iters)}"
          for m in methods), flush=True)
  writer.close()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, case in zip(axes, ("heterogeneous", "homogeneous")):
    for method in ("gd", "adam", "adam_mini"):
      x = np.arange(1, len(curves[(case, method)]) + 1) * c.log_every
      reached = _iterations_text(summary[case][method]["iterations_to_target"], c.max_iters)
      ax.semilogy(x, curves[(case, method)], label=f"{method} (target: {reached})")
    ax.axhline(c.target, color="k", ls=":", lw=0.8)
    ax.set_title(f"{case} blocks, kappa={c.kappa:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("(f - f*) / (f(0) - f*)")
    ax.legend()
  plots.save_figure(fig, os.path.join(workdir, "quadratic.png"), dpi=110)
  summary["target"] = c.target
  return summary


EXPERIMENTS = {"heterogeneity": heterogeneity, "quadratic": quadratic}

# The config's top-level keys each experiment reads (experiments/cli.py refuses any other): the
# heterogeneity part trains through the trainer (its sections, less `loss`: the tasks are given);
# the quadratic part trains no network.
READS = {
    "heterogeneity": (*(k for k in TRAINER_READS if k != "loss"), *OWN_SECTIONS),
    "quadratic": ("experiment", "seed", "kappa", "block_dim", "heterogeneous", "homogeneous",
                  "target", "max_iters", "gd_step_factors", "adam_lrs", "b1", "b2", "eps",
                  "log_every"),
}


def reads(config) -> tuple[str, ...]:
  """The top-level keys the experiment named by `config.experiment` reads."""
  if config.get("experiment") not in EXPERIMENTS:
    raise ConfigError(f"config.experiment must be one of {sorted(EXPERIMENTS)}, "
                      f"got {config.get('experiment')!r}")
  return READS[config.experiment]


def run(config, workdir: str) -> dict:
  """Runs the experiment named by `config.experiment`; writes config.json and summary.json.

  Args:
    config: a config from configs/hessian_heterogeneity.py or configs/hessian_quadratic.py.
    workdir: the output directory.

  Returns:
    The summary.
  """
  reads(config)
  outputs.write_config(config, workdir)
  start = time.time()
  summary = EXPERIMENTS[config.experiment](config, workdir)
  summary["wall_seconds"] = time.time() - start
  summary["devices"] = [str(d) for d in jax.devices()]
  outputs.write_summary(summary, workdir)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps(summary.get("table", summary), indent=2), flush=True)


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program, so that tests can import `run`
  # from several experiments into one process without absl's duplicate-flag error.
  cli.define_config_and_workdir()
  cli.run(main, reads=reads)
