r"""Adam's (b1, b2) region: the counterexample's phase diagram and a tiny Transformer's.

  python -m experiments.adam_betas --config=configs/adam_betas.py --workdir=/tmp/betas

counterexample: |x_T - x*| of Adam (optax.adam semantics, step eta0 / sqrt(k)) on Zhang et al.'s
  counterexample (2.5), every (b1, b2) cell in one jitted program, for each n, sampler, starting
  point and index sequence; the spec's pass criteria B3-B7 on the primary setting (the first
  sampler and starting point, median over sequences), and each setting's diverged fraction.
transformer: a tiny byte-level GPT-2 trained with plain Adam at every cell of a coarser grid,
  for two batch sizes (a smaller batch is a larger n); final loss on a fixed validation batch,
  non-finite and loss-spike flags, and the soft criteria T1-T3.
Outputs in the workdir: config.json, metrics.jsonl (one row per cell), summary.json,
counterexample.png and transformer.png (each with the curve b1 = sqrt(b2)).

Reference: Zhang, Chen, Shi, Sun, Luo, "Adam Can Converge Without Any Modification On Update
Rules" (NeurIPS 2022); spec: shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md, part B.
"""

import functools
import itertools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import tqdm
from absl import app, flags
from flax import nnx

from bigmodel_jax.data import ByteTokenizer, load_source, make_lm_dataset, sample_eval_batches
from bigmodel_jax.models import create_model
from bigmodel_jax.optim import adam_counterexample as ce
from bigmodel_jax.train import builders, outputs
from bigmodel_jax.train.beta_grid import train_beta_grid
from bigmodel_jax.train.metrics import MetricWriter
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def counterexample_grid(cfg) -> tuple[np.ndarray, np.ndarray]:
  """b1 values (columns) and b2 values (rows) of the counterexample's grid."""
  b1s = np.round(np.arange(0.0, 1.0 - 1e-9, cfg.grid_step), 6)
  b2s = np.unique(np.concatenate([b1s, cfg.extra_b2]))
  return b1s, b2s


def run_counterexample(cfg, seed: int) -> dict:
  """Median gaps over index sequences, for each (n, sampler, x0): float64[b2, b1] arrays."""
  b1s, b2s = counterexample_grid(cfg)
  grid_b1, grid_b2 = ce.beta_grid(b1s, b2s)
  results = {}
  settings = [(n, s, x0) for n in cfg.ns for s in cfg.samplings for x0 in cfg.x0s]
  with jax.enable_x64(True):  # as the float64 NumPy pilot: no rounding in 50k steps
    for n, sampling, x0 in tqdm.tqdm(settings, desc="counterexample"):
      keys = jax.random.split(jax.random.key(seed), cfg.seeds)
      orders = jnp.stack([ce.sample_order(k, n, cfg.steps, sampling) for k in keys])
      run = functools.partial(ce.adam_gaps, grid_b1, grid_b2, n=n, a=cfg.a, x0=x0,
                              steps=cfg.steps, eta0=cfg.eta0, eps=cfg.eps)
      per_seed = jax.jit(jax.vmap(lambda order: run(order=order)))(orders)  # noqa: B023
      results[(n, sampling, x0)] = np.median(np.asarray(per_seed), axis=0)
  return results


def _cell(gap: np.ndarray, b1s, b2s, b1: float, b2: float) -> float:
  return float(gap[np.argmin(np.abs(b2s - b2)), np.argmin(np.abs(b1s - b1))])


def beta2_threshold(gap: np.ndarray, b2s: np.ndarray, column: int, converged: float) -> float:
  """The smallest b2 of the grid from which on every cell of the column converged (inf: none)."""
  ok = gap[:, column] < converged
  for row in range(len(b2s)):
    if ok[row:].all():
      return float(b2s[row])
  return float("inf")


def _finite_or_none(value: float) -> float | None:
  """JSON has no infinity: a threshold above the whole grid is written as null."""
  return value if np.isfinite(value) else None


def counterexample_criteria(gaps: dict, cfg) -> dict:
  """The spec's pass criteria B3-B7 on the primary setting, each with the numbers behind it."""
  b1s, b2s = counterexample_grid(cfg)
  sampling, x0 = cfg.samplings[0], cfg.x0s[0]
  gap = {n: gaps[(n, sampling, x0)] for n in cfg.ns}
  b1_grid, b2_grid = np.meshgrid(b1s, b2s)
  region = lambda cond: (lambda g: g[cond])
  criteria = {}

  def add(name, values, passed, rule):
    criteria[name] = {"rule": rule, "passed": bool(passed), "values": values}

  if 3 in gap:
    g = gap[3]
    top = region(b2_grid >= 0.7)(g)
    lobe = region((b1_grid <= 0.3) & (b2_grid <= 0.5))(g)
    right = region((b1_grid >= 0.7) & (b2_grid >= 0.1) & (b2_grid <= 0.6))(g)
    add("B3", {"max_gap_b2>=0.7": float(top.max()), "min_gap_lobe": float(lobe.min()),
               "max_gap_b1>=0.7_b2_in_[0.1,0.6]": float(right.max())},
        top.max() < 0.1 and lobe.min() > 10 and right.max() < 1,
        "n=3: gap < 0.1 for b2 >= 0.7; > 10 for b1 <= 0.3, b2 <= 0.5; < 1 for b1 >= 0.7, "
        "0.1 <= b2 <= 0.6")
  if 10 in gap:
    g = gap[10]
    top = region(b2_grid >= 0.99)(g)
    low = region((b2_grid <= 0.9) & (b1_grid <= 0.5))(g)
    add("B4", {"max_gap_b2>=0.99": float(top.max()), "min_gap_b2<=0.9_b1<=0.5": float(low.min())},
        top.max() < 1 and low.min() > 10,
        "n=10: gap < 1 for b2 >= 0.99; > 10 for b2 <= 0.9, b1 <= 0.5")
  if 30 in gap:
    g = gap[30]
    low = region((b2_grid <= 0.95) & (b1_grid <= 0.5))(g)
    near = region((np.isclose(b2_grid, 0.99)) & (b1_grid <= 0.5))(g)
    add("B5", {"min_gap_b2<=0.95_b1<=0.5": float(low.min()),
               "min_gap_b2=0.99_b1<=0.5": float(near.min())},
        low.min() > 30 and near.min() > 5,
        "n=30: gap > 30 for b2 <= 0.95, b1 <= 0.5; > 5 at b2 = 0.99, b1 <= 0.5")
  fractions = [float((gap[n] > cfg.diverged_gap).mean()) for n in cfg.ns]
  thresholds = [beta2_threshold(gap[n], b2s, 0, cfg.converged_gap) for n in cfg.ns]
  add("B6", {"diverged_fraction": dict(zip(map(str, cfg.ns), fractions)),
             "beta2_star_at_b1=0 (null: above the grid)": dict(zip(
                 map(str, cfg.ns), map(_finite_or_none, thresholds)))},
      all(a < b for a, b in itertools.pairwise(fractions))
      and all(a <= b for a, b in itertools.pairwise(thresholds)),
      "the diverged fraction grows strictly with n and beta2*(n, b1=0) does not decrease")
  reddi_safe = b1_grid < np.sqrt(b2_grid)
  diverged_inside = int(sum((gap[n][reddi_safe] > cfg.diverged_gap).sum() for n in cfg.ns))
  converged_outside = int(((gap[cfg.ns[0]] < cfg.converged_gap) & ~reddi_safe).sum())
  add("B7", {"diverged_cells_with_b1<sqrt(b2)": diverged_inside,
             f"converged_cells_with_b1>=sqrt(b2)_at_n={cfg.ns[0]}": converged_outside,
             "gap_(0,0.5)": _cell(gap[cfg.ns[0]], b1s, b2s, 0.0, 0.5),
             "gap_(0.8,0.5)": _cell(gap[cfg.ns[0]], b1s, b2s, 0.8, 0.5)},
      diverged_inside > 0 and converged_outside > 0,
      "some cell with b1 < sqrt(b2) diverges and some cell with b1 >= sqrt(b2) converges")
  return criteria


def _transformer_data(tcfg, batch_size: int, seed: int):
  """`steps` training batches stacked on a leading axis, and one fixed validation batch."""
  data_dir = builders.data_dir(tcfg)
  train = load_source("text_files", data_dir=data_dir, split="train")
  validation = load_source("text_files", data_dir=data_dir, split="validation")
  iterator = make_lm_dataset(source=train, tokenizer=ByteTokenizer(), split="train",
                             seq_len=tcfg.seq_len, global_batch_size=batch_size, seed=seed,
                             shuffle_window=1024)
  batches = [next(iterator) for _ in range(tcfg.steps)]
  stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
  (eval_batch,) = sample_eval_batches(source=validation, tokenizer=ByteTokenizer(),
                                      seq_len=tcfg.seq_len, global_batch_size=tcfg.eval_rows,
                                      num_batches=1, seed=seed)
  return stacked, eval_batch


def cell_flags(train_loss: np.ndarray, final_loss: np.ndarray, tcfg) -> dict[str, np.ndarray]:
  """Non-finite, spike ratio and unstable flags of every cell (rows of train_loss)."""
  nonfinite = ~np.isfinite(train_loss).all(axis=1) | ~np.isfinite(final_loss)
  running_min = np.minimum.accumulate(np.where(np.isfinite(train_loss), train_loss, np.inf),
                                      axis=1)
  after = slice(min(50, train_loss.shape[1] - 1), None)
  spike = np.nanmax(train_loss[:, after] / running_min[:, after], axis=1)
  best = np.nanmin(np.where(nonfinite, np.nan, final_loss))
  unstable = nonfinite | (final_loss > best + tcfg.unstable_margin) | (spike > tcfg.spike_ratio)
  return {"nonfinite": nonfinite, "spike_ratio": spike, "unstable": unstable}


def run_transformer(tcfg, seed: int, writer: MetricWriter) -> dict:
  """Final losses and flags of every (batch size, b2, b1) cell."""
  model_config = builders.model_config(tcfg.model, ByteTokenizer.vocab_size)
  graphdef, state = nnx.split(create_model(model_config, nnx.Rngs(seed)), nnx.Param)
  params = nnx.to_pure_dict(state)
  grid_b1, grid_b2 = ce.beta_grid(tcfg.b1s, tcfg.b2s)
  results = {}
  for batch_size in tqdm.tqdm(tcfg.batch_sizes, desc="transformer grid"):
    batches, eval_batch = _transformer_data(tcfg, batch_size, seed)
    curves = jax.device_get(train_beta_grid(
        graphdef, params, batches, eval_batch, jnp.asarray(grid_b1.ravel(), jnp.float32),
        jnp.asarray(grid_b2.ravel(), jnp.float32), learning_rate=tcfg.lr, eps=tcfg.eps,
        eval_steps=tcfg.eval_steps))
    final = curves.eval_loss.mean(axis=1)
    flags_ = cell_flags(curves.train_loss, final, tcfg)
    results[batch_size] = {"final_loss": final.reshape(grid_b1.shape),
                           **{k: v.reshape(grid_b1.shape) for k, v in flags_.items()}}
    for i, (b1, b2) in enumerate(zip(grid_b1.ravel(), grid_b2.ravel())):
      writer.write(i, {"part": "transformer", "batch_size": batch_size, "b1": b1, "b2": b2,
                       "final_loss": final[i], "spike_ratio": flags_["spike_ratio"][i],
                       "nonfinite": bool(flags_["nonfinite"][i]),
                       "unstable": bool(flags_["unstable"][i]),
                       "loss_curve_every_10": curves.train_loss[i, ::10]})
  return results


def transformer_criteria(results: dict, tcfg) -> dict:
  """The spec's soft criteria T1-T3, each with the numbers behind it."""
  b1s, b2s = np.asarray(tcfg.b1s), np.asarray(tcfg.b2s)
  b1_grid, b2_grid = np.meshgrid(b1s, b2s)
  small, large = min(tcfg.batch_sizes), max(tcfg.batch_sizes)
  final = {b: results[b]["final_loss"] for b in tcfg.batch_sizes}
  criteria = {}
  high = np.nanmean(final[large][(b2_grid >= 0.99) & (b1_grid <= 0.9)])
  low = np.nanmean(final[large][(b2_grid <= 0.8) & (b1_grid <= 0.9)])
  criteria["T1"] = {"rule": f"B={large}: mean final loss over b2 >= 0.99 (b1 <= 0.9) < over "
                            "b2 <= 0.8", "passed": bool(high < low),
                    "values": {"b2>=0.99": float(high), "b2<=0.8": float(low)}}
  best = float(np.nanmin(final[large]))
  picks = {f"({b1}, {b2})": _cell(final[large], b1s, b2s, b1, b2)
           for b1, b2 in ((0.9, 0.999), (0.9, 0.95))}
  criteria["T2"] = {"rule": f"B={large}: (0.9, 0.999) and (0.9, 0.95) within 0.1 nats of the "
                            "best cell", "passed": all(v - best <= 0.1 for v in picks.values()),
                    "values": {**picks, "best": best}}
  column = int(np.argmin(np.abs(b1s - 0.9)))
  good_from = {b: beta2_threshold(results[b]["unstable"].astype(float), b2s, column, 0.5)
               for b in (small, large)}
  criteria["T3"] = {"rule": "at b1 = 0.9 the smallest good b2 for the small batch >= that for "
                            "the large batch", "passed": bool(good_from[small] >= good_from[large]),
                    "values": {f"B={b}": _finite_or_none(v) for b, v in good_from.items()}}
  return criteria


def _sqrt_curve(ax):
  b1 = np.linspace(0, 0.999, 200)
  ax.plot(b1, b1**2, "w:", lw=1.5, label="b1 = sqrt(b2)")
  ax.set_xlabel("b1")
  ax.set_ylabel("b2")
  ax.legend(loc="lower right", fontsize=7)


def plot_counterexample(gaps: dict, cfg, path: str) -> None:
  """One heatmap of min(gap, clip) per n, on the primary setting."""
  b1s, b2s = counterexample_grid(cfg)
  sampling, x0 = cfg.samplings[0], cfg.x0s[0]
  fig, axes = plt.subplots(1, len(cfg.ns), figsize=(4.2 * len(cfg.ns), 3.8),
                           constrained_layout=True)
  for ax, n in zip(np.atleast_1d(axes), cfg.ns):
    mesh = ax.pcolormesh(b1s, b2s, np.minimum(gaps[(n, sampling, x0)], cfg.plot_clip),
                         cmap="turbo", shading="nearest")
    fig.colorbar(mesh, ax=ax, label="|x_T - x*|")
    ax.set_title(f"n = {n}")
    _sqrt_curve(ax)
  fig.suptitle(f"Adam on the counterexample: gap after {cfg.steps:,} steps ({sampling}, "
               f"x0 = {x0})")
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_transformer(results: dict, tcfg, path: str) -> None:
  """One heatmap of the final loss per batch size; unstable cells marked x."""
  b1s, b2s = np.asarray(tcfg.b1s), np.asarray(tcfg.b2s)
  fig, axes = plt.subplots(1, len(tcfg.batch_sizes), figsize=(4.4 * len(tcfg.batch_sizes), 3.8),
                           constrained_layout=True)
  for ax, batch_size in zip(np.atleast_1d(axes), tcfg.batch_sizes):
    result = results[batch_size]
    x, y = np.arange(len(b1s)), np.arange(len(b2s))
    best = np.nanmin(result["final_loss"])  # colours clipped at best + 1.5: blow-ups saturate
    mesh = ax.pcolormesh(x, y, result["final_loss"], cmap="turbo", shading="nearest",
                         vmin=best, vmax=best + 1.5)
    fig.colorbar(mesh, ax=ax, label="final loss (nats/token), clipped")
    rows, cols = np.nonzero(result["unstable"])
    ax.plot(cols, rows, "kx", label="unstable")
    curve = np.linspace(0, len(b1s) - 1, 200)
    b2_on_curve = np.interp(curve, x, b1s) ** 2
    inside = (b2_on_curve >= b2s[0]) & (b2_on_curve <= b2s[-1])  # axes are grid indices
    ax.plot(curve[inside], np.interp(b2_on_curve[inside], b2s, y), "w:", lw=1.5,
            label="b1 = sqrt(b2)")
    ax.set_xticks(x, [str(v) for v in b1s])
    ax.set_yticks(y, [str(v) for v in b2s])
    ax.set_xlabel("b1")
    ax.set_ylabel("b2")
    ax.set_title(f"batch size {batch_size}")
    ax.legend(loc="lower right", fontsize=7)
  fig.suptitle(f"Tiny GPT-2, plain Adam (lr {tcfg.lr}), {tcfg.steps} steps")
  fig.savefig(path, dpi=120)
  plt.close(fig)


# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("seed", "counterexample", "transformer")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  outputs.write_config(config, workdir)
  writer = MetricWriter(workdir)
  cfg = config.counterexample
  gaps = run_counterexample(cfg, config.seed)
  for (n, sampling, x0), gap in gaps.items():
    writer.write(0, {"part": "counterexample", "n": n, "sampling": sampling, "x0": x0,
                     "diverged_fraction": float((gap > cfg.diverged_gap).mean()),
                     "converged_fraction": float((gap < cfg.converged_gap).mean())})
  transformer = run_transformer(config.transformer, config.seed, writer)
  writer.close()
  b1s, b2s = counterexample_grid(cfg)
  summary = {
      "counterexample": {
          "criteria": counterexample_criteria(gaps, cfg),
          "diverged_fraction": {f"n={n}/{s}/x0={x0}": float((g > cfg.diverged_gap).mean())
                                for (n, s, x0), g in gaps.items()},
          "beta2_star_at_b1=0 (null: above the grid)": {
              f"n={n}/{s}/x0={x0}": _finite_or_none(beta2_threshold(g, b2s, 0,
                                                                   cfg.converged_gap))
              for (n, s, x0), g in gaps.items()},
          "grid": {"b1": b1s.tolist(), "b2": b2s.tolist()},
      },
      "transformer": {
          "criteria": transformer_criteria(transformer, config.transformer),
          "final_loss": {str(b): r["final_loss"].tolist() for b, r in transformer.items()},
          "unstable": {str(b): r["unstable"].tolist() for b, r in transformer.items()},
      },
  }
  outputs.write_summary(summary, workdir)
  plot_counterexample(gaps, cfg, os.path.join(workdir, "counterexample.png"))
  plot_transformer(transformer, config.transformer, os.path.join(workdir, "transformer.png"))
  verdicts = {part: {k: v["passed"] for k, v in summary[part]["criteria"].items()}
              for part in ("counterexample", "transformer")}
  print(json.dumps(verdicts))


if __name__ == "__main__":
  cli.define_config_and_workdir("configs/adam_betas.py[:small]", "Where the outputs go.")
  cli.run(main, data_feeds_model=False, reads=READS)
