"""The parameters a run starts from: a checkpoint of an earlier trainer run, or a Hugging Face
directory.

`init_from` names either the workdir of a `train_and_evaluate` run (its checkpoints/ hold the
model config and the parameters; the optimizer state is not restored) or "hf:DIR", a Hugging
Face Llama / Qwen3 / GPT-2 directory (its config.json gives the model config; dtype, param_dtype,
remat and scan_unroll come from the `model` section). Fine-tuning (experiments.finetune) and the
semi-open victim (experiments.semi_open) both start from here.
"""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from bigmodel_jax import hf, sharding
from bigmodel_jax.data.tokenizers import HF_PREFIX
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train import builders, checkpointing


def restore_checkpoint(workdir: str, mesh, rules, step: int = -1):
  """The model config, graph and parameters of a checkpoint of a trainer run's workdir.

  Args:
    workdir: the run directory of `train_and_evaluate` (holds checkpoints/).
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    step: the checkpoint's step; -1: the latest.

  Returns:
    (TransformerConfig, graphdef, params sharded on `mesh`, checkpoint step).

  Raises:
    ValueError: naming init_from / init_step, when there is no such checkpoint.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not workdir or not os.path.isdir(directory):
    raise ValueError(f"init_from={workdir!r} holds no checkpoints/ of a training run")
  manager = checkpointing.make_manager(directory, max_to_keep=1_000_000, async_save=False)
  try:
    if step == -1:
      step = manager.latest_step()
      if step is None:
        raise ValueError(f"init_from={workdir!r}: no finished checkpoint in {directory}")
    elif step not in manager.all_steps():
      raise ValueError(f"init_step={step}: no such checkpoint in {directory} (there are "
                       f"{sorted(manager.all_steps())})")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    model_config = builders.model_config(ml_collections.ConfigDict(meta["model"]), None)
    graphdef, abstract_params = abstract_model(model_config)
    shardings = sharding.param_shardings(abstract_params, mesh, rules)
    target = {"params": jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nnx.to_pure_dict(abstract_params), shardings)}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
  finally:
    manager.close()
  return model_config, graphdef, restored["state"]["params"], step


def load_pretrained(init_from: str, model: ml_collections.ConfigDict, mesh, rules,
                    step: int = -1):
  """The model config, graph, parameters and step that a run starts from.

  Args:
    init_from: a trainer run's workdir, or "hf:DIR".
    model: the `model` section (its numerics apply to an "hf:" import).
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    step: the workdir's checkpoint (-1: the latest); must be -1 for "hf:".

  Returns:
    (TransformerConfig, graphdef, params sharded on `mesh`, checkpoint step; 0 for "hf:").
  """
  if not init_from.startswith(HF_PREFIX):
    return restore_checkpoint(init_from, mesh, rules, step)
  if step != -1:
    raise ValueError(f"init_step={step} applies to a training run's workdir, not to "
                     f"init_from={init_from!r} (leave it at -1)")
  model_config, graphdef, params = hf.import_checkpoint(
      init_from.removeprefix(HF_PREFIX), mesh, rules, **builders.numerics(model))
  return model_config, graphdef, params, 0
