r"""RLHF comparison: `python -m experiments.rlhf --config=configs/rlhf_arithmetic.py --workdir=W`.

Supervised fine-tunes a tiny model on generated addition problems, then runs every method of
`rl.methods` from that start with the same prompt batches and seeds. Both phases go through the
trainer (`train_and_evaluate`: checkpoints, resume, non-finite guard, metrics): the supervised
phase is a language-model task on the problems (loss on the answer tokens) in W/sft; each RL
method but PPO is the policy task with the method's step (train/rl_task.py) in W/<method>; PPO,
whose value model is not part of the trainer's state, runs the same steps on its own state in
W/ppo. Each run directory holds its metrics.jsonl (per step: sampled reward, KL to the reference,
response length, ...; every `train.eval_every` steps the greedy reward on held-out problems,
`eval_greedy_reward`). Writes into W: config.json, summary.json
({"methods": {NAME: {"final_greedy_reward", "final_sampled_reward", "state_bytes",
"step_time_s", "phase_time_s", ...}}, "sft": {...}}) and rlhf_curves.png / rlhf_cost.png (the
costs and rlhf_cost.png only with `rl.time_repeats` > 0).

Costs are measured after training, on the final parameters (with a fresh optimizer state of the
same shapes): step_time_s is the median time of the fused, jitted step (all phases in one
program, state donated), and the same compiled step gives XLA's memory analysis; phase_time_s
are the medians of the four phases jitted apart (generation, reward, reference, update).
"""

import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags
from flax import nnx

from bigmodel_jax import rl
from bigmodel_jax.data import make_lm_dataset
from bigmodel_jax.data.arithmetic import SPLITS, ArithmeticSource, encode_prompts
from bigmodel_jax.data.array_batches import RandomBatches, padded_batches
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.models import create_model
from bigmodel_jax.models.sampling import SamplingOptions
from bigmodel_jax.rl.gradient_variance import gradient_estimates, total_variance
from bigmodel_jax.rl.memory import compile_step, compiled_memory
from bigmodel_jax.rl.rewards import arithmetic_reward
from bigmodel_jax.train import builders, metrics, outputs
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.loop import TRAINER_READS, train_and_evaluate
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.pretrained import restore_checkpoint
from bigmodel_jax.train.rl_task import greedy_reward_metrics, policy_task, rl_step
from bigmodel_jax.train.task import Data, language_model_task
from experiments import cli, rlhf_plots

PHASES = ("generation", "reward", "reference", "update")
GROUP_METHODS = ("rloo", "grpo")
MAX_REWARD = 1.0  # rl.rewards.arithmetic_reward is the fraction of right characters

# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*(k for k in TRAINER_READS if k not in ("data", "loss")), "task", "sft", "rl")


def prompt_batches(source: ArithmeticSource, count: int, size: int, seed: int) -> np.ndarray:
  """int32[count, size, p]: random problems of `source` as prompts (seeded)."""
  rng = np.random.default_rng(seed)
  indices = rng.integers(0, len(source), size=(count, size))
  tokenizer = ByteTokenizer()
  return np.stack([encode_prompts([source.problem(int(i)) for i in row], tokenizer)
                   for row in indices])


def all_prompts(source: ArithmeticSource) -> np.ndarray:
  """int32[len(source), p]: every problem of `source` as a prompt."""
  return encode_prompts([source.problem(i) for i in range(len(source))], ByteTokenizer())


def sft_data(config: ml_collections.ConfigDict, sources: dict) -> Data:
  """The problems as supervised examples: one problem per row (the "\\n"-ended answer and EOS are
  the targets), random train problems, the first `sft.train.eval_batches` batches of the
  validation problems for evaluation."""
  tokenizer, train = ByteTokenizer(), config.sft.train
  seq_len = len(tokenizer.encode(sources["train"][0]["text"])) + 1  # start token + EOS

  def batches(split: str, **kwargs):
    return make_lm_dataset(source=sources[split], tokenizer=tokenizer, split=split,
                           seq_len=seq_len, global_batch_size=train.global_batch_size,
                           seed=config.seed, process_index=jax.process_index(),
                           process_count=jax.process_count(), completion_only_loss=True,
                           pack_documents=False, **kwargs)

  eval_batches = list(batches("validation", num_batches=train.eval_batches))
  return Data(train_iterator=lambda: batches("train"), eval_batches=lambda: eval_batches,
              description={k: {"fingerprint": v.fingerprint, "problems": len(v)}
                           for k, v in sources.items()},
              seq_len=seq_len, tokenizer=tokenizer)


def prompt_data(config: ml_collections.ConfigDict, sources: dict) -> Data:
  """The RL phase's data: batches of random train prompts (the same for every method), and the
  greedy evaluation's validation prompts in `train.eval_batches` batches."""
  size = config.train.global_batch_size
  prompts = {"prompts": all_prompts(sources["train"])}
  eval_prompts = prompt_batches(sources["validation"], 1, size * config.train.eval_batches,
                                config.seed)[0]
  eval_batches = padded_batches(
      {"prompts": eval_prompts, "weight": np.ones(len(eval_prompts), np.float32)}, size)
  return Data(train_iterator=lambda: RandomBatches(prompts, size, config.seed + 2),
              eval_batches=lambda: eval_batches,
              description={"train_prompts": len(prompts["prompts"]),
                           "eval_prompts": len(eval_prompts)})


def make_greedy_reward(graphdef, data: Data, options: rl.RLOptions, digits: int):
  """params -> the mean greedy reward over the evaluation prompts of `data` (jitted)."""
  sums = jax.jit(greedy_reward_metrics(arithmetic_reward(digits), options.sampling,
                                       MAX_REWARD)(graphdef))

  def greedy_reward(params) -> float:
    totals = [jax.device_get(sums(params, batch)) for batch in data.eval_batches()]
    return float(sum(t["greedy_reward"] for t in totals) / sum(t["weight"] for t in totals))

  return greedy_reward


def supervised_fine_tune(config: ml_collections.ConfigDict, workdir: str, model_config,
                         sources: dict, greedy_reward):
  """Trains the SFT run in workdir/sft; returns its summary entry and its final parameters."""
  run_dir = os.path.join(workdir, "sft")
  run = derive(config, drop=("task", "sft", "rl"),
               values={"train": config.sft.train, "opt": config.sft.opt})
  trained = train_and_evaluate(run, run_dir, task=language_model_task(
      model_config, sft_data(config, sources)), final_metrics=lambda graphdef, params: {
          "greedy_reward": greedy_reward(params)})
  mesh, rules = builders.mesh_and_rules(config)
  _, _, params, step = restore_checkpoint(run_dir, mesh, rules)
  return {"greedy_reward": trained["final_metrics"]["greedy_reward"],
          "final_eval_loss": trained["final_eval_loss"], "steps": config.sft.train.steps,
          "rl_start_step": step}, jax.device_get(params)  # on the host: one copy for any mesh


def method_options(name: str, rl_config: ml_collections.ConfigDict) -> rl.RLOptions:
  """The RLOptions of one method from the `rl` config section."""
  sampling = SamplingOptions(max_new_tokens=rl_config.max_new_tokens,
                             temperature=rl_config.temperature, top_p=rl_config.top_p,
                             eos_id=ord("\n"))
  group = name in GROUP_METHODS
  epochs = {"ppo": rl_config.ppo_epochs, "grpo": rl_config.grpo_epochs}.get(name, 1)
  return rl.RLOptions(
      sampling, kl_coef=rl_config.kl_coef, gamma=rl_config.gamma,
      reward_clip=rl_config.reward_clip,
      samples_per_prompt=rl_config.group_size if group else rl_config.samples_per_prompt,
      clip_ratio=rl_config.clip_ratio, epochs=epochs, gae_lambda=rl_config.gae_lambda,
      value_clip=rl_config.value_clip)


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def phase_times(method: rl.Method, state, prompts, key, repeats: int) -> dict[str, float]:
  """Median seconds of each of the four phases jitted apart, over `repeats` calls after one
  that compiles."""
  generate, reward, reference, update = (jax.jit(phase) for phase in method)
  times = []
  for _ in range(repeats + 1):
    rollout, t_gen = _timed(generate, state, prompts, key)
    scores, t_reward = _timed(reward, rollout)
    ref_log_probs, t_ref = _timed(reference, state, rollout)
    _, t_update = _timed(update, state, rollout, scores, ref_log_probs)
    times.append(dict(zip(PHASES, (t_gen, t_reward, t_ref, t_update))))
  return {p: statistics.median(t[p] for t in times[1:]) for p in PHASES}


def fused_step_cost(method: rl.Method, state, prompts, key, repeats: int,
                    compiled=None) -> dict:
  """Exact state bytes, XLA memory analysis and median seconds of the fused, jitted step.

  The step is compiled once with the state donated (or is `compiled`, `rl.memory.compile_step`'s
  program for these shapes); each timed call gets a fresh copy of the state (copied outside the
  timed region).
  """
  compiled = compiled or compile_step(method, state, prompts, key)
  times = []
  for _ in range(repeats + 1):  # the first call warms up
    fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
    times.append(_timed(compiled, fresh, prompts, key)[1])
  return {"state_bytes": rl.state_bytes(state), **compiled_memory(compiled),
          "step_time_s": statistics.median(times[1:])}


def measure_after_training(method: rl.Method, state: rl.RLState, context: dict,
                           compiled=None) -> dict:
  """What a method changed and (with `rl.time_repeats` > 0) what its step costs, measured on
  its final state (`compiled`: the step's donated program, if already compiled)."""
  changed = jax.tree.map(lambda new, old: (new != old).sum(), state.params, context["sft_params"])
  measured = {"fraction_params_changed": float(sum(jax.tree.leaves(changed))) / sum(
      x.size for x in jax.tree.leaves(state.params))}
  repeats = context["config"].rl.time_repeats
  if not repeats:
    return measured
  prompts, key = jnp.asarray(context["first_prompts"]), jax.random.key(context["config"].seed)
  cost = fused_step_cost(method, state, prompts, key, repeats, compiled)
  return {**measured,
          "state_bytes": cost["state_bytes"]["total"],
          "state_bytes_by_part": cost["state_bytes"],
          "step_peak_bytes": cost["step_peak_bytes"],
          "step_temp_bytes": cost["step_temp_bytes"],
          "step_time_s": cost["step_time_s"],
          "phase_time_s": phase_times(method, state, prompts, key, repeats)}


def _rl_run_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return derive(config, drop=("task", "sft", "rl"))


def train_with_trainer(name: str, context: dict, run_dir: str) -> dict:
  """Trains a method without extra models (rl_task.POLICY_ONLY_METHODS) through the trainer;
  returns its measurements after training."""
  config, sft_params = context["config"], context["sft_params"]
  options, reward = method_options(name, config.rl), arithmetic_reward(config.task.digits)

  def final_metrics(graphdef, params) -> dict:
    optimizer, _ = make_optimizer(config.opt, config.train.steps)
    method, state = rl.make_method(name, context["model_config"], graphdef,
                                   jax.device_get(params), optimizer, reward, options)
    return measure_after_training(method, state._replace(ref_params=sft_params), context)

  task = policy_task(context["model_config"], context["data"], lambda: sft_params,
                     greedy_reward_metrics(reward, options.sampling, MAX_REWARD))
  return train_and_evaluate(_rl_run_config(config), run_dir,
                            make_step=rl_step(name, options, reward, sft_params, MAX_REWARD),
                            task=task, final_metrics=final_metrics)["final_metrics"]


def train_on_own_state(name: str, context: dict, run_dir: str) -> dict:
  """Trains a method with a value model (PPO) on its own rl.RLState, with the trainer's steps,
  prompt batches, rollout keys, metrics and evaluations (no checkpoints: a rerun starts again);
  returns its measurements after training."""
  config, train = context["config"], context["config"].train
  options = method_options(name, config.rl)
  optimizer, _ = make_optimizer(config.opt, train.steps * options.epochs)
  method, state = rl.make_method(name, context["model_config"], context["graphdef"],
                                 context["sft_params"], optimizer,
                                 arithmetic_reward(config.task.digits), options)
  batches, key = context["data"].train_iterator(), jax.random.key(config.seed)
  # the program that the costs are measured with after training, state donated
  step = compile_step(method, state, jnp.asarray(context["first_prompts"]), key)
  outputs.write_config(_rl_run_config(config), run_dir)
  if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    os.remove(os.path.join(run_dir, "metrics.jsonl"))
  writer, bar = metrics.MetricWriter(run_dir), metrics.progress_bar(train.steps, 0)
  bar.set_description(name)
  for i in range(train.steps):
    state, step_metrics = step(state, jnp.asarray(next(batches)["prompts"]),
                               jax.random.fold_in(key, i))
    done = i + 1
    if done % train.log_every == 0 or done == train.steps:
      step_metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
      writer.write(done, {**step_metrics, "surrogate_loss": step_metrics["loss"],
                          "loss": MAX_REWARD - step_metrics["sampled_reward"]})
    if done % train.eval_every == 0 or done == train.steps:
      writer.write(done, {"eval_greedy_reward": context["greedy"](state.params)})
    bar.update(1)
  bar.close()
  writer.close()
  return measure_after_training(method, state, context, step)


def method_summary(run_dir: str, measured: dict, eval_every: int) -> dict:
  """A method's summary entry from its run's metrics and its measurements after training."""
  rows = metrics.read_metrics(run_dir)
  steps = [r for r in rows if "sampled_reward" in r]
  evals = [r for r in rows if "eval_greedy_reward" in r]
  last = steps[-1]["step"]
  return {
      "final_greedy_reward": evals[-1]["eval_greedy_reward"],
      "final_sampled_reward": float(np.mean([r["sampled_reward"] for r in steps
                                             if r["step"] > last - eval_every])),
      "final_kl": steps[-1]["kl"],
      **measured,
      "curve": rows,
  }


def gradient_variances(context: dict) -> dict:
  """Total variance and mean-gradient norm of each policy-gradient method at the SFT params."""
  config = context["config"]
  count = config.rl.variance_batches
  prompts = jnp.asarray(context["variance_batches"])
  keys = jax.random.split(jax.random.key(config.seed + 1), count)
  result = {}
  for name in [m for m in config.rl.methods if m != "ppo"]:
    options = method_options(name, config.rl)._replace(epochs=1)
    method, state = rl.make_method(name, context["model_config"], context["graphdef"],
                                   context["sft_params"], optax.sgd(1.0),
                                   arithmetic_reward(config.task.digits), options)
    estimates = jax.jit(lambda s, p, k, m=method: gradient_estimates(m, s, p, k))(
        state, prompts, keys)
    result[name] = {"total_variance": float(total_variance(estimates)),
                    "mean_gradient_norm": float(jnp.linalg.norm(estimates.mean(0))),
                    "batches": count}
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the comparison; returns (and writes) the summary."""
  outputs.write_config(config, workdir)
  digits = config.task.digits
  model_config = builders.model_config(config.model, ByteTokenizer.vocab_size)
  graphdef, params = nnx.split(create_model(model_config, nnx.Rngs(config.seed)))
  sources = {split: ArithmeticSource(split=split, digits=digits,
                                     validation_fraction=config.task.validation_fraction,
                                     seed=config.task.split_seed) for split in SPLITS}
  data = prompt_data(config, sources)
  # the greedy responses need the answer's tokens, whatever the method's sampling
  greedy = make_greedy_reward(graphdef, data, method_options("remax", config.rl), digits)
  initial_reward = greedy(nnx.to_pure_dict(params))  # the SFT run starts from these params
  sft, sft_params = supervised_fine_tune(config, workdir, model_config, sources, greedy)
  sft["initial_greedy_reward"] = initial_reward
  print(f"SFT: {sft}", flush=True)
  context = dict(config=config, model_config=model_config, graphdef=graphdef,
                 sft_params=sft_params, greedy=greedy, data=data,
                 first_prompts=next(data.train_iterator())["prompts"],
                 variance_batches=prompt_batches(sources["train"],
                                                 max(config.rl.variance_batches, 1),
                                                 config.train.global_batch_size, config.seed + 3))
  methods = {}
  for name in config.rl.methods:
    run_dir = os.path.join(workdir, name)
    train = train_on_own_state if name == "ppo" else train_with_trainer
    methods[name] = method_summary(run_dir, train(name, context, run_dir),
                                   config.train.eval_every)
  summary = {"sft": sft, "num_params": model_config.num_params(), "optimizer": config.opt.name,
             "methods": {n: {k: v for k, v in m.items() if k != "curve"}
                         for n, m in methods.items()}}
  if config.rl.variance_batches:
    summary["gradient_variance"] = gradient_variances(context)
  timed = config.rl.time_repeats > 0
  summary["targets"] = rlhf_plots.targets(summary) if timed else None
  outputs.write_summary(summary, workdir)
  rlhf_plots.plot_curves({n: m["curve"] for n, m in methods.items()}, sft,
                         os.path.join(workdir, "rlhf_curves.png"))
  if timed:
    rlhf_plots.plot_cost(summary, os.path.join(workdir, "rlhf_cost.png"))
  return summary


def main(argv):
  del argv
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({n: {k: m.get(k) for k in ("final_greedy_reward", "state_bytes", "step_time_s")}
                    for n, m in summary["methods"].items()}, indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False, reads=READS)
