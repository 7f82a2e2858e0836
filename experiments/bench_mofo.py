r"""MoFO's update time against optax.adamw's: `python -m experiments.bench_mofo --out=bench.json`.

Both optimizers update random gradients of a model's parameter shapes (default: GPT-2 124M,
124M parameters: 38.6M embedding + 12 stacked layers) on this machine, in the same process,
with interleaved repetitions; the figure is the median of the per-repetition ratios MoFO /
AdamW. Each update is `jax.jit(optimizer.update)` (moments, selection, decay, learning rate;
not `apply_updates`) with the optimizer state donated, as in a train step, timed with
`block_until_ready` after one compiling call. Also timed: the threshold selection alone
(`momentum_mask` on every leaf), and `read_pass`, one pass that reads every entry's g and m
(reduced per leaf): the least any exact selection adds, since the mask of step t depends on all
of m_t. `floor_ratio` = (AdamW + read_pass) / AdamW.

Prints and writes one JSON object (to --out).
"""

import importlib
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx

from bigmodel_jax import blocks, sharding
from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.optim import native_select
from bigmodel_jax.optim.mofo import default_partition, mofo, momentum_mask
from bigmodel_jax.train import builders
from bigmodel_jax.train.optimizers import decay_mask
from experiments import cli

HYPER = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)


def parameter_shapes(name: str):
  """Abstract parameters of `configs/<file>.py:<arg>`'s model (nothing allocated)."""
  module, _, arg = name.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(*([arg] if arg else []))
  model_config = builders.model_config(config.model, 257)
  return nnx.to_pure_dict(sharding.abstract_model(model_config)[1])


def random_tree(shapes, seed: int):
  """Normal random arrays of the shapes of `shapes` (one jitted call)."""
  leaves, treedef = jax.tree.flatten(shapes)

  def make(key):
    keys = jax.random.split(key, len(leaves))
    return [jax.random.normal(keys[i], x.shape, jnp.float32) * 1e-2
            for i, x in enumerate(leaves)]

  return treedef.unflatten(jax.jit(make)(jax.random.key(seed)))


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _select_all(mu, fraction):
  specs = blocks.resolve(default_partition, mu, layer_axes=LAYER_AXES)
  return [momentum_mask(m, s, fraction) for m, s in zip(jax.tree.leaves(mu), specs)]


def _read_pass(grads, mu):
  """The least extra work of any exact selection: one read of every entry's new |m| (from g and
  the old m, each block reduced to one number; here its max)."""
  return [jnp.max(jnp.abs(HYPER["b1"] * m + (1 - HYPER["b1"]) * g))
          for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(mu))]


def benchmark(model: str, fraction: float, repeats: int, donate_state: bool = True) -> dict:
  """Median update-time ratio MoFO / AdamW (and the selection's share) on `model`'s shapes."""
  shapes = parameter_shapes(model)
  params, grads, mu = (random_tree(shapes, seed) for seed in range(3))
  optimizers = {"adamw": optax.adamw(1e-3, mask=decay_mask, **HYPER),
                "mofo": mofo(1e-3, fraction=fraction, layer_axes=LAYER_AXES, **HYPER)}
  # As in a train step, the optimizer state is donated (unless donate_state=False): each update
  # writes its new moments into the old ones' buffers, so the timings do not include allocating
  # (and the kernel zeroing) a fresh gigabyte of state per call.
  donate = (1,) if donate_state else ()
  updates = {name: jax.jit(opt.update, donate_argnums=donate)
             for name, opt in optimizers.items()}
  states = {name: opt.init(params) for name, opt in optimizers.items()}
  select = jax.jit(_select_all, static_argnums=1)
  read_pass = jax.jit(_read_pass)

  def run(name):
    if name == "selection":
      return select(mu, fraction)
    if name == "read_pass":
      return read_pass(grads, mu)
    new_updates, states[name] = updates[name](grads, states[name], params)
    return new_updates, states[name]

  names = (*optimizers, "selection", "read_pass")
  for name in names:  # compile
    _timed(run, name)
  times = {name: [] for name in names}
  for _ in range(repeats):
    for name in names:
      times[name].append(_timed(run, name))
  ratios = [m / a for m, a in zip(times["mofo"], times["adamw"])]
  return {
      "model": model,
      "num_params": sum(x.size for x in jax.tree.leaves(shapes)),
      "fraction": fraction,
      "donate_state": donate_state,
      "native_selection": native_select.available(),
      "repeats": repeats,
      "median_ratio_mofo_over_adamw": statistics.median(ratios),
      "ratios": ratios,
      "median_s": {name: statistics.median(t) for name, t in times.items()},
      "selection_share_of_mofo": statistics.median(times["selection"]) / statistics.median(
          times["mofo"]),
      # AdamW plus one read pass over g and m: what an exact per-step selection costs at least.
      "floor_ratio": statistics.median(
          [(a + r) / a for a, r in zip(times["adamw"], times["read_pass"])]),
      "target_ratio": 1.3,
      "device": jax.devices()[0].device_kind,
      "cpu_count": jax.local_device_count(),
      "machine": platform.processor() or platform.machine(),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  result = benchmark(flags.FLAGS.model, flags.FLAGS.fraction, flags.FLAGS.repeats,
                     flags.FLAGS.donate_state)
  text = json.dumps(result, indent=2)
  print(text)
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program (tests import `benchmark`).
  flags.DEFINE_string("model", "gpt2:124m", "configs/<file>.py:<arg> of the model shapes.")
  flags.DEFINE_float("fraction", 0.1, "MoFO fraction.")
  flags.DEFINE_integer("repeats", 7, "Interleaved timed repetitions.")
  flags.DEFINE_bool("donate_state", True, "Donate the optimizer state (as a train step does).")
  flags.DEFINE_string("out", None, "Where to write the JSON result.")
  cli.run(main)
