r"""RLHF comparison: `python -m experiments.rlhf --config=configs/rlhf_arithmetic.py --workdir=W`.

Supervised fine-tunes a tiny model on generated addition problems, then runs every method of
`rl.methods` from that start with the same prompt batches and seeds. Writes into the workdir:
config.json, metrics.jsonl (per method and step: sampled reward, KL to the reference, response
length, phase times of generation / reward / reference / update, and every `rl.log_every` steps
the greedy reward on held-out problems), summary.json
({"methods": {NAME: {"final_greedy_reward", "final_sampled_reward", "state_bytes",
"step_time_s", ...}}, "sft": {...}}) and rlhf_curves.png / rlhf_cost.png.

Phase times come from the four phases jitted apart; step_time_s is the median time of the fused,
jitted step (all phases in one program, state donated), measured after training on the final
state; the same compiled step gives XLA's memory analysis.
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
from bigmodel_jax.data.arithmetic import ArithmeticSource, encode_prompts
from bigmodel_jax.data.tokenizers import ByteTokenizer
from bigmodel_jax.models import create_model
from bigmodel_jax.models.sampling import SamplingOptions, generate
from bigmodel_jax.rl.gradient_variance import gradient_estimates, total_variance
from bigmodel_jax.rl.logprobs import response_log_probs
from bigmodel_jax.rl.memory import compile_step, compiled_memory
from bigmodel_jax.rl.rewards import arithmetic_reward, arithmetic_targets
from bigmodel_jax.train import builders, outputs
from bigmodel_jax.train.metrics import MetricWriter, progress_bar
from bigmodel_jax.train.optimizers import make_optimizer
from experiments import cli, rlhf_plots

PHASES = ("generation", "reward", "reference", "update")
GROUP_METHODS = ("rloo", "grpo")


# The config's top-level keys (experiments/cli.py refuses any other).
READS = ("seed", "model", "opt", "task", "sft", "rl")


def prompt_batches(source: ArithmeticSource, count: int, size: int, seed: int) -> np.ndarray:
  """int32[count, size, p]: random problems of `source` as prompts (seeded)."""
  rng = np.random.default_rng(seed)
  indices = rng.integers(0, len(source), size=(count, size))
  tokenizer = ByteTokenizer()
  return np.stack([encode_prompts([source.problem(int(i)) for i in row], tokenizer)
                   for row in indices])


def supervised_fine_tune(graphdef, params, batches: np.ndarray, digits: int,
                         opt: ml_collections.ConfigDict):
  """Teacher-forced cross-entropy on the answers (and their newline) of `batches`, with the
  optimizer of the `sft.opt` section."""
  optimizer, _ = make_optimizer(opt, len(batches))

  @jax.jit
  def step(params, opt_state, prompts):
    targets = arithmetic_targets(prompts, digits)
    loss_fn = lambda p: -response_log_probs(graphdef, p, prompts, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, loss = optimizer.init(params), jnp.nan
  for prompts in batches:
    params, opt_state, loss = step(params, opt_state, prompts)
  return params, float(loss)


def make_greedy_reward(graphdef, prompts: np.ndarray, digits: int, max_new_tokens: int):
  """params -> mean reward of the greedy responses to `prompts` (jitted)."""
  reward_fn = arithmetic_reward(digits)
  options = SamplingOptions(max_new_tokens=max_new_tokens, eos_id=ord("\n"))

  @jax.jit
  def greedy_reward(params):
    out = generate(graphdef, params, prompts, jax.random.key(0), options, greedy=True)
    return reward_fn(prompts, out.tokens, out.mask).mean()

  return greedy_reward


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


class PhasedStep:
  """The four phases of a method, jitted apart so that each can be timed."""

  def __init__(self, method: rl.Method):
    self.generate = jax.jit(method.generate)
    self.reward = jax.jit(method.reward)
    self.reference = jax.jit(method.reference)
    self.update = jax.jit(method.update)

  def __call__(self, state, prompts, key):
    """(state, metrics, {phase: seconds})."""
    rollout, t_gen = _timed(self.generate, state, prompts, key)
    scores, t_reward = _timed(self.reward, rollout)
    ref_log_probs, t_ref = _timed(self.reference, state, rollout)
    (state, metrics), t_update = _timed(self.update, state, rollout, scores, ref_log_probs)
    return state, metrics, dict(zip(PHASES, (t_gen, t_reward, t_ref, t_update)))


def fused_step_cost(method: rl.Method, state, prompts, key, repeats: int) -> dict:
  """Exact state bytes, XLA memory analysis and median seconds of the fused, jitted step.

  The step is compiled once with the state donated; each timed call gets a fresh copy of the
  state (copied outside the timed region).
  """
  compiled = compile_step(method, state, prompts, key)
  times = []
  for _ in range(repeats + 1):  # the first call warms up
    fresh = jax.block_until_ready(jax.tree.map(jnp.copy, state))
    times.append(_timed(compiled, fresh, prompts, key)[1])
  return {"state_bytes": rl.state_bytes(state), **compiled_memory(compiled),
          "step_time_s": statistics.median(times[1:])}


def run_method(name: str, context: dict, writer: MetricWriter) -> dict:
  """Trains one method from the SFT start; returns its summary entry."""
  c = context["config"].rl
  options = method_options(name, c)
  optimizer, _ = make_optimizer(context["config"].opt, c.steps * options.epochs)
  method, state = rl.make_method(name, context["model_config"], context["graphdef"],
                                 context["sft_params"], optimizer,
                                 arithmetic_reward(context["digits"]), options)
  phased, batches, greedy_reward = PhasedStep(method), context["batches"], context["greedy"]
  base_key = jax.random.key(context["config"].seed)
  bar = progress_bar(c.steps, 0)
  bar.set_description(name)
  rows = []
  for i, prompts in enumerate(batches):
    state, metrics, times = phased(state, prompts, jax.random.fold_in(base_key, i))
    row = {"method": name, **{k: float(v) for k, v in metrics.items()},
           **{f"time_{k}_s": v for k, v in times.items()}}
    if (i + 1) % c.log_every == 0 or i + 1 == len(batches):
      row["eval_greedy_reward"] = float(greedy_reward(state.params))
    writer.write(i + 1, row)
    rows.append(row)
    bar.update(1)
  bar.close()
  cost = fused_step_cost(method, state, jnp.asarray(batches[0]), base_key, c.time_repeats)
  timed = rows[1:] or rows  # the first step compiles
  changed = jax.tree.map(lambda new, old: (new != old).sum(), state.params, context["sft_params"])
  return {
      "final_greedy_reward": rows[-1]["eval_greedy_reward"],
      "fraction_params_changed": float(sum(jax.tree.leaves(changed))) / sum(
          x.size for x in jax.tree.leaves(state.params)),
      "final_sampled_reward": float(np.mean([r["sampled_reward"] for r in rows[-c.log_every:]])),
      "state_bytes": cost["state_bytes"]["total"],
      "state_bytes_by_part": cost["state_bytes"],
      "step_peak_bytes": cost["step_peak_bytes"],
      "step_temp_bytes": cost["step_temp_bytes"],
      "step_time_s": cost["step_time_s"],
      "phase_time_s": {p: statistics.median(r[f"time_{p}_s"] for r in timed) for p in PHASES},
      "final_kl": rows[-1]["kl"],
      "curve": rows,
  }


def gradient_variances(context: dict) -> dict:
  """Total variance and mean-gradient norm of each policy-gradient method at the SFT params."""
  c = context["config"].rl
  count = c.variance_batches
  prompts = jnp.asarray(context["variance_batches"])
  keys = jax.random.split(jax.random.key(context["config"].seed + 1), count)
  result = {}
  for name in [m for m in c.methods if m != "ppo"]:
    options = method_options(name, c)._replace(epochs=1)
    method, state = rl.make_method(name, context["model_config"], context["graphdef"],
                                   context["sft_params"], optax.sgd(1.0),
                                   arithmetic_reward(context["digits"]), options)
    estimates = jax.jit(lambda s, p, k, m=method: gradient_estimates(m, s, p, k))(
        state, prompts, keys)
    result[name] = {"total_variance": float(total_variance(estimates)),
                    "mean_gradient_norm": float(jnp.linalg.norm(estimates.mean(0))),
                    "batches": count}
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the comparison; returns (and writes) the summary."""
  outputs.write_config(config, workdir)
  digits, c = config.task.digits, config.rl
  model_config = builders.model_config(config.model, ByteTokenizer.vocab_size)
  graphdef, params = nnx.split(create_model(model_config, nnx.Rngs(config.seed)))
  params = nnx.to_pure_dict(params)
  split = dict(digits=digits, validation_fraction=config.task.validation_fraction,
               seed=config.task.split_seed)
  train, validation = ArithmeticSource(split="train", **split), ArithmeticSource(
      split="validation", **split)
  eval_prompts = prompt_batches(validation, 1, c.eval_prompts, config.seed)[0]
  greedy = make_greedy_reward(graphdef, eval_prompts, digits, c.max_new_tokens)
  initial_reward = float(greedy(params))
  sft_batches = prompt_batches(train, config.sft.steps, config.sft.batch_size, config.seed + 1)
  sft_params, sft_loss = supervised_fine_tune(graphdef, params, sft_batches, digits,
                                              config.sft.opt)
  sft = {"greedy_reward": float(greedy(sft_params)), "initial_greedy_reward": initial_reward,
         "final_loss": sft_loss, "steps": config.sft.steps}
  print(f"SFT: {sft}", flush=True)
  context = dict(config=config, model_config=model_config, graphdef=graphdef,
                 sft_params=sft_params, digits=digits, greedy=greedy,
                 batches=prompt_batches(train, c.steps, c.prompts_per_step, config.seed + 2),
                 variance_batches=prompt_batches(train, max(c.variance_batches, 1),
                                                 c.prompts_per_step, config.seed + 3))
  writer = MetricWriter(workdir)
  methods = {name: run_method(name, context, writer) for name in c.methods}
  writer.close()
  summary = {"sft": sft, "num_params": model_config.num_params(), "optimizer": config.opt.name,
             "methods": {n: {k: v for k, v in m.items() if k != "curve"}
                         for n, m in methods.items()}}
  if c.variance_batches:
    summary["gradient_variance"] = gradient_variances(context)
  summary["targets"] = rlhf_plots.targets(summary)
  outputs.write_summary(summary, workdir)
  rlhf_plots.plot_curves({n: m["curve"] for n, m in methods.items()}, sft,
                         os.path.join(workdir, "rlhf_curves.png"))
  rlhf_plots.plot_cost(summary, os.path.join(workdir, "rlhf_cost.png"))
  return summary


def main(argv):
  del argv
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({n: {k: m[k] for k in ("final_greedy_reward", "state_bytes", "step_time_s")}
                    for n, m in summary["methods"].items()}, indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir()
  cli.run(main, data_feeds_model=False, reads=READS)
