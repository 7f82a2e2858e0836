"""`train_and_evaluate`: the pre-training loop.

config -> mesh, data, model, optimizer -> (resumed or fresh) sharded state -> jitted step ->
metrics, evaluations, checkpoints -> summary.json and a loss-curve PNG in the workdir.

Faults it survives: a killed process (the same command resumes from the latest complete
checkpoint, bit-identically), SIGTERM (a checkpoint at the next step boundary, then `Preempted`),
a damaged latest checkpoint (falls back to the previous one), non-finite steps (skipped and
counted; a streak of `train.max_consecutive_nonfinite` stops the run), and an unwritable or full
workdir (an error at start or at the failing save, naming the path and the last good checkpoint).
The same code runs as one process or as several (train/distributed.py).

Only healthy states are checkpointed: each of the last `train.log_every` steps was not skipped,
its loss was no higher than max(2 x the run's lowest loss, the run's first loss) and its update
was smaller than the parameters it changed (train/nonfinite.py). A checkpoint step whose state is
not healthy is logged and passed over, so a run that blows up (e.g. `opt.lr` far too high) stops
naming its last healthy checkpoint, and the same command with changed `opt.*` settings (only
`opt.name` must match) resumes from there with a fresh streak count.

Before any work, and before anything is written to the workdir, every config value is checked
against its domain (train/config_checks.py); config.json is written once a resume is known to be
compatible, and rerunning a finished run keeps its summary.json.

The step and the task are arguments. The step (`make_step`): the unfused step of train/step.py
by default, the fused LOMO / AdaLomo step of train/fused_step.py, or an experiment's own (the RL
step). The task (train/task.py): the model, its data, training loss and evaluation metrics; by
default the transformer of the `model` section on the text of the `data` section. Whichever
they are, the run gets the checkpoints, resume, SIGTERM handling, non-finite guard, metrics and
progress above.
"""

import math
import os
import sys
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from bigmodel_jax import sharding
from bigmodel_jax.train import (
  builders,
  checkpointing,
  config_checks,
  distributed,
  flops,
  metrics,
  outputs,
  plots,
)
from bigmodel_jax.train.errors import ConfigError, NonFiniteError
from bigmodel_jax.train.hessian_option import hessian_metrics, with_hessian_monitor
from bigmodel_jax.train.nonfinite import NonFiniteGuard
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.preemption import Preempted, PreemptionWatcher
from bigmodel_jax.train.state import abstract_train_state, init_train_state
from bigmodel_jax.train.step import StepBuilder, make_train_step
from bigmodel_jax.train.task import Data, Task, language_model_task
from bigmodel_jax.train.text_samples import sample_texts


def _global_batch(batch: dict[str, np.ndarray], batch_sharding: NamedSharding):
  return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}


def evaluate(eval_step, params, batches, batch_sharding) -> tuple[dict, int]:
  """The evaluation metrics over `batches`, each summed and divided by the total weight.

  Args:
    eval_step: jitted (params, batch) -> {name: sum, ..., "weight": weight} (a `Task`'s
      eval_metrics).
    params: the parameters.
    batches: an iterable of host batches.
    batch_sharding: sharding of a global batch.

  Returns:
    ({name: mean per unit of weight}, total weight: tokens of a language model).
  """
  totals: dict[str, float] = {}
  for batch in batches:
    sums = jax.device_get(eval_step(params, _global_batch(batch, batch_sharding)))
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + float(value)
  weight = totals.pop("weight", 0.0)
  if weight == 0:
    raise ValueError("the evaluation batches hold no weight (no tokens or examples); check the "
                     "data (data.name / data.text_globs for text)")
  return {name: value / weight for name, value in totals.items()}, int(weight)


def _save_if_healthy(manager, step: int, state, train_iter, identity, guard: NonFiniteGuard
                     ) -> bool:
  """Checkpoints `state` of `step` if the guard finds it healthy, else logs why not.

  Returns:
    Whether a save was started.
  """
  reason = guard.unhealthy(step)
  if reason:
    logging.warning("step %d is not checkpointed: %s. The latest checkpoint in %s stays the last "
                    "healthy one.", step, reason, manager.directory)
    return False
  checkpointing.save(manager, step, state, train_iter.get_state(), identity,
                     guard.resume_counters())
  return True


def _nonfinite_stop(error: NonFiniteError, manager) -> NonFiniteError:
  """The guard's error completed with the last healthy checkpoint and the way out."""
  checkpointing.wait_until_finished(manager)
  good = checkpointing.last_good(str(manager.directory))
  if good is None:
    where = (f"No healthy checkpoint was written to {manager.directory}, so the run starts "
             "again from step 0")
  else:
    where = (f"Last healthy checkpoint: step {good} in {manager.directory} (unhealthy states are "
             f"never checkpointed); the run resumes from step {good} with a fresh streak count")
  return NonFiniteError(
      f"{error} {where} when you run the same command again with changed settings: lower "
      "opt.lr, raise opt.warmup_steps or check the data (opt.* settings other than opt.name may "
      "change between runs).")


def _bits_per_byte(eval_loss: float, data: Data) -> dict:
  """{"eval_bits_per_byte": ...} for text data, {} for data without bytes."""
  if not data.bytes_per_token:
    return {}
  return {"eval_bits_per_byte": eval_loss / math.log(2) / data.bytes_per_token}


def _device_peak_bytes() -> int | None:
  """The most memory the first local device has held in this process (None on CPU, which keeps
  no statistics)."""
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


# The config's top-level keys that `train_and_evaluate` reads (less "data" and "loss" when a
# task is given, and "model" too when the task's model is not the config's transformer).
TRAINER_READS = ("seed", "model", "data", "train", "loss", "opt", "mesh", "sharding_rules")


def _unfused(graphdef, task: Task, optimizer: optax.GradientTransformation,
             schedule: optax.Schedule, config: ml_collections.ConfigDict) -> Callable:
  if task.train_loss is None:
    raise ValueError(f"the task {task.name!r} has no training loss for the unfused step; it "
                     "trains with a step of its own (train_and_evaluate's make_step)")
  return make_train_step(graphdef, optimizer, schedule, config.train.grad_accum_steps,
                         loss_fn=task.train_loss(graphdef))


# The default step: train/step.py's, over `train.grad_accum_steps` micro-batches of the task's
# training loss; the optimizer sees the whole gradient and optax's extra arguments.
unfused_step = StepBuilder(_unfused)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       make_step: StepBuilder = unfused_step, task: Task | None = None,
                       final_metrics: Callable[..., dict] | None = None) -> dict:
  """Trains, evaluates and checkpoints the model of `config`; resumes from `workdir` if possible.

  Args:
    config: the experiment config (see configs/pretrain.py for every key).
    workdir: the run directory; receives config.json, metrics.jsonl, tensorboard/, checkpoints/,
      summary.json (with `train.sample_tokens` > 0: a few texts sampled from the final model)
      and loss.png.
    make_step: the step builder; `unfused_step` (default), `fused_step.fused_step(...)` or
      an experiment's own (e.g. an RL step).
    task: the model, data, training loss and evaluation (train/task.py); None: the transformer
      of the `model` section on the text of the `data` section with the `loss` section's loss.
      A given task replaces the `data` and `loss` sections (and `model` when its model is not
      built from it), which the config then leaves out.
    final_metrics: (graphdef, params) -> {name: value} of the final model, recorded in the
      summary under "final_metrics" (an experiment's own evaluation).

  Returns:
    The summary dict that is also written to summary.json.

  Raises:
    ConfigError: naming the key, when a config value is outside its domain (nothing written).
    Preempted: after a SIGTERM, once the checkpoint of the current step is written (if healthy).
    NonFiniteError: after `train.max_consecutive_nonfinite` skipped steps in a row, naming the
      last healthy checkpoint.
    CheckpointError: when the workdir cannot take a checkpoint (at start) or a save fails.
    IncompatibleCheckpointError: when the workdir holds another model's or optimizer's run.
  """
  config_checks.check_config(config)
  start_time = time.time()
  is_lead = jax.process_index() == 0
  checkpoint_dir = os.path.join(workdir, "checkpoints")
  checkpointing.check_writable(checkpoint_dir)

  mesh, rules = builders.mesh_and_rules(config)
  train_cfg = config.train
  builders.check_batch_divisibility(train_cfg.global_batch_size, train_cfg.grad_accum_steps, mesh)
  if task is None:
    task = _text_task(config)
  data = task.data
  optimizer, schedule = make_optimizer(config.opt, train_cfg.steps)
  if train_cfg.hessian_every > 0:
    if not make_step.whole_gradient:
      raise ConfigError("train.hessian_every > 0 needs a step whose optimizer sees the whole "
                        "gradient (the monitor runs on it), not a fused one; set it to 0")
    optimizer = with_hessian_monitor(
        optimizer, train_cfg, sharding.abstract_model(task.model_config, task.create_model)[1],
        config.seed)
  identity = task.identity(config.opt.name)

  graphdef, abstract_state = abstract_train_state(task.model_config, optimizer, mesh, rules,
                                                  task.create_model)
  checkpointing.check_free_space(checkpoint_dir, sharding.tree_bytes(abstract_state))
  manager = checkpointing.make_manager(checkpoint_dir, max_to_keep=train_cfg.keep_checkpoints)
  restored = checkpointing.restore_latest(manager, abstract_state, identity)
  finished = restored is not None and int(restored[0].step) >= train_cfg.steps
  if finished and (summary := outputs.read_summary(workdir)) is not None:
    checkpointing.close(manager)
    if is_lead:
      print(f"{workdir} holds a finished run of {train_cfg.steps} steps; its summary.json is kept",
            flush=True)
    return summary
  if is_lead:  # only now: a refused resume leaves the workdir's config.json as it was
    outputs.write_config(config, workdir)
  train_iter = data.train_iterator()
  if restored is None:
    graphdef, state, _ = init_train_state(task.model_config, optimizer, mesh, rules, config.seed,
                                          task.create_model, task.init_params)
    guard = NonFiniteGuard(train_cfg.max_consecutive_nonfinite, window=train_cfg.log_every)
  else:
    state, data_state, counters = restored
    train_iter.set_state(data_state)
    guard = NonFiniteGuard(train_cfg.max_consecutive_nonfinite, counters,
                           window=train_cfg.log_every)
    if is_lead:
      print(f"resumed from step {int(state.step)} of {manager.directory}", flush=True)
  state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)

  batch_sharding = sharding.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  train_step = jax.jit(
      make_step.build(graphdef, task, optimizer, schedule, config),
      in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
      donate_argnums=0)
  eval_step = jax.jit(task.eval_metrics(graphdef),
                      in_shardings=(state_shardings.params, batch_sharding),
                      out_shardings=replicated)

  # throughput in tokens of a sequence task, else in examples
  unit = "tokens" if data.seq_len else "examples"
  units_per_step = train_cfg.global_batch_size * (data.seq_len or 1)
  flops_per_step = task.flops_per_token * units_per_step if task.flops_per_token else None
  peak = flops.peak_flops_per_device(train_cfg.peak_flops_per_device) if flops_per_step else None
  writer = metrics.MetricWriter(workdir, enabled=is_lead)
  first_step = int(state.step)
  bar = metrics.progress_bar(train_cfg.steps, first_step, enabled=is_lead)
  eval_loss = eval_weight = None
  train_time, timed_steps, window_start, window_steps = 0.0, 0, time.time(), 0
  try:
    with PreemptionWatcher() as preemption:
      for step in range(first_step, train_cfg.steps):
        batch = _global_batch(next(train_iter), batch_sharding)
        state, step_metrics = train_step(state, batch)
        if train_cfg.hessian_every > 0 and step % train_cfg.hessian_every == 0:
          # computed by the step's monitor at the pre-update parameters of `step`
          writer.write(step, hessian_metrics(state.opt_state, abstract_state.params, train_cfg))
        guard.push(step + 1, step_metrics.pop("finite"), step_metrics)
        window_steps += 1
        done = step + 1
        if done % train_cfg.log_every == 0 or done == train_cfg.steps:
          guard.flush()
          step_metrics = {**jax.device_get(step_metrics), **guard.counters()}
          elapsed = time.time() - window_start
          if step > first_step:  # the first window includes compilation: not timed
            train_time += elapsed
            timed_steps += window_steps
          step_metrics[f"{unit}_per_s"] = units_per_step * window_steps / elapsed
          if flops_per_step:
            step_metrics["model_flops_per_s"] = flops_per_step * window_steps / elapsed
          if peak:
            step_metrics["mfu"] = step_metrics["model_flops_per_s"] / (peak * jax.device_count())
          writer.write(done, step_metrics)
          bar.set_postfix(loss=f"{step_metrics['loss']:.3f}",
                          per_s=f"{step_metrics[f'{unit}_per_s']:.0f}")
          window_start, window_steps = time.time(), 0
        bar.update(1)
        if done % train_cfg.eval_every == 0 or done == train_cfg.steps:
          paused = time.time()
          eval_metrics, eval_weight = evaluate(eval_step, state.params, data.eval_batches(),
                                               batch_sharding)
          eval_loss = eval_metrics["loss"]
          writer.write(done, {**{f"eval_{k}": v for k, v in eval_metrics.items()},
                              **_bits_per_byte(eval_loss, data)})
          if is_lead:
            bar.write(f"step {done}: validation loss {eval_loss:.4f} "
                      f"{'nats/token' if data.seq_len else 'per example'}")
          window_start += time.time() - paused  # not training time
        preempted = done < train_cfg.steps and preemption.reached(done)
        saved = False
        if done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps or preempted:
          guard.flush()
          saved = _save_if_healthy(manager, done, state, train_iter, identity, guard)
        if preempted:
          checkpointing.wait_until_finished(manager)
          raise Preempted(done, str(manager.directory), saved=saved)
      guard.flush()
  except NonFiniteError as e:
    raise _nonfinite_stop(e, manager) from None
  finally:
    bar.close()
    writer.close()
    checkpointing.close(manager, quiet=sys.exc_info()[0] is not None)

  if eval_loss is None:  # resumed a finished run: evaluate once for the summary
    eval_metrics, eval_weight = evaluate(eval_step, state.params, data.eval_batches(),
                                         batch_sharding)
    eval_loss = eval_metrics["loss"]
  texts = []
  if train_cfg.sample_tokens and data.tokenizer is not None:
    texts = sample_texts(
        graphdef, state.params, data.tokenizer, num_samples=3, seed=config.seed,
        max_new_tokens=min(train_cfg.sample_tokens, task.model_config.max_seq_len - 1))
  summary = {
      "steps": train_cfg.steps,
      "num_params": sum(int(x.size) for x in jax.tree.leaves(abstract_state.params)),
      "final_eval_loss": eval_loss,
      "final_eval": eval_metrics,
      "final_eval_bits_per_byte": _bits_per_byte(eval_loss, data).get("eval_bits_per_byte"),
      "eval_bytes_per_token": data.bytes_per_token,
      f"eval_{unit}": eval_weight,
      "data": data.description,
      f"{unit}_per_s": units_per_step * timed_steps / train_time if timed_steps else None,
      "mfu": (flops_per_step * timed_steps / train_time / (peak * jax.device_count())
              if timed_steps and peak else None),
      "device_peak_bytes": _device_peak_bytes(),
      "wall_time_s": time.time() - start_time,
      "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "versions": outputs.package_versions(),
      "samples": texts,
  }
  if final_metrics is not None:
    summary["final_metrics"] = final_metrics(graphdef, state.params)
  if is_lead:
    outputs.write_summary(summary, workdir)
    title = f"{task.name}, {summary['num_params']:,} params"
    plots.plot_loss_curves(metrics.read_metrics(workdir), os.path.join(workdir, "loss.png"),
                           title=title)
  return summary


def _text_task(config: ml_collections.ConfigDict) -> Task:
  """The transformer of the `model` section on the text of the `data` section."""
  data = distributed.lead_first(lambda: builders.make_data(config), "data")
  model_config = builders.model_config(config.model, data.tokenizer.vocab_size)
  return language_model_task(model_config, data, config.loss)
