r"""Plans memory: `python -m experiments.memory --config=configs/llama.py:llama2-7b --compile`.

`--init_from=hf:DIR` plans for the model of a Hugging Face Llama / GPT-2 directory instead
(DIR/config.json; dtype, param_dtype and remat from the config's `model` section).

Prints one JSON object:
  {"num_params": int, "param_bytes": int,
   "optimizers": {NAME: {"state_bytes": int, "step_peak_bytes": int or null}},
   "rl_optimizer": NAME,
   "rl_methods": {NAME: {"state_bytes": {part: int, "total": int}, "step_peak_bytes": int}}}
(rl_optimizer and rl_methods only with --rl_methods=remax,ppo,...; the RL state holds policy,
optimizer state, reference and, for PPO, the value model and its optimizer state, all with the
config's optimizer `opt.name`, named by rl_optimizer, whatever --optimizers lists).
state_bytes is the optimizer state of the whole model (jax.eval_shape, nothing allocated);
step_peak_bytes (with --compile) is XLA's memory analysis of the compiled train step, per device
of the config's mesh, at the config's batch size and sequence length.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import rl
from bigmodel_jax.models.sampling import SamplingOptions
from bigmodel_jax.rl import memory as rl_mem
from bigmodel_jax.train import builders, memory
from bigmodel_jax.train.optimizers import available_optimizers, make_optimizer, opt_with
from experiments import cli, pretrain

# The config is the one of the experiments.pretrain run whose memory is planned: its sections.
READS = pretrain.READS


def define_flags() -> None:
  """Defines the flags when this runs as a program (see cli.define_config_and_workdir)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_list("optimizers", None,
                    "Optimizer names (default: every optimizer the factory knows).")
  flags.DEFINE_bool("compile", False, "Also compile the train step and report its peak memory.")
  flags.DEFINE_string("init_from", None,
                      "hf:DIR: the model of a Hugging Face directory's config.json.")
  flags.DEFINE_list(
      "rl_methods", [], "RL methods (bigmodel_jax.rl.METHODS) to size too, with the config's "
      "optimizer: prompts of data.seq_len // 2 tokens, as many new tokens, "
      "train.global_batch_size prompts per step.")
  flags.mark_flag_as_required("config")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = flags.FLAGS.config
  names = flags.FLAGS.optimizers or available_optimizers()
  unknown = sorted(set(names) - set(available_optimizers()))
  if unknown:
    raise app.UsageError(f"--optimizers: unknown {unknown}; choose from {available_optimizers()}")
  mesh, rules = builders.mesh_and_rules(config)
  if flags.FLAGS.init_from:
    model_config = builders.hf_model_config(flags.FLAGS.init_from, config.model)
  else:
    model_config = builders.model_config(config.model,
                                         builders.tokenizer_vocab_size(config.data))
  result = {"optimizers": {}}
  for name in names:
    optimizer, schedule = make_optimizer(opt_with(config.opt, name=name), config.train.steps)
    num_params, param_bytes, opt_bytes = memory.state_bytes(model_config, optimizer, mesh, rules)
    result.update(num_params=num_params, param_bytes=param_bytes)
    peak = None
    if flags.FLAGS.compile:
      peak = memory.compiled_step_peak_bytes(
          model_config, optimizer, schedule, mesh, rules,
          global_batch_size=config.train.global_batch_size, seq_len=config.data.seq_len,
          grad_accum_steps=config.train.grad_accum_steps)
    result["optimizers"][name] = {"state_bytes": opt_bytes, "step_peak_bytes": peak}
  output = {"num_params": result["num_params"], "param_bytes": result["param_bytes"],
            "optimizers": result["optimizers"]}
  if flags.FLAGS.rl_methods:
    output["rl_optimizer"] = config.opt.name
    output["rl_methods"] = rl_memory(config, model_config, flags.FLAGS.rl_methods,
                                     flags.FLAGS.compile)
  print(json.dumps(output))


def rl_memory(config, model_config, names: list[str], compile_step: bool) -> dict:
  """State bytes (and compiled step memory) of each RL method (ReMax, PPO, ...), with the
  config's optimizer `opt.name`."""
  unknown = sorted(set(names) - set(rl.METHODS))
  if unknown:
    raise app.UsageError(f"--rl_methods: unknown {unknown}; choose from {sorted(rl.METHODS)}")
  optimizer, _ = make_optimizer(config.opt, config.train.steps)
  prompt_len = config.data.seq_len // 2
  options = rl.RLOptions(SamplingOptions(max_new_tokens=config.data.seq_len - prompt_len),
                         samples_per_prompt=2)
  return {name: rl_mem.method_memory(name, model_config, optimizer, options,
                                     batch_size=config.train.global_batch_size,
                                     prompt_len=prompt_len, compile_step=compile_step)
          for name in names}


if __name__ == "__main__":
  define_flags()
  cli.run(main, reads=READS)
