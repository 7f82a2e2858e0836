"""Orbax checkpoints of the train state, the input iterator position and the run's identity.

Each checkpoint holds three items: `state` (the sharded TrainState), `data` (the input iterator's
JSON state, so a resumed run sees exactly the batches it would have seen) and `meta` (the model
config and optimizer name, to refuse resuming from an incompatible run). Orbax writes each step
into a temporary directory and renames it when complete, and `latest_step` only lists finished
steps, so a partially written checkpoint is never taken as the latest.
"""

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


def make_manager(directory: str, *, max_to_keep: int, async_save: bool = True
                 ) -> ocp.CheckpointManager:
  """A CheckpointManager for `directory` (created if missing).

  Args:
    directory: where the step directories go.
    max_to_keep: number of most recent checkpoints kept.
    async_save: write in a background thread while training continues.

  Returns:
    An orbax CheckpointManager with items state, data and meta.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(epath.Path(directory).absolute(), options=options,
                               item_names=("state", "data", "meta"))


def run_identity(model_config, optimizer_name: str) -> dict[str, Any]:
  """What must match for a checkpoint to be resumable: the model config and the optimizer."""
  return {"model": dataclasses.asdict(model_config), "opt.name": optimizer_name}


def save(manager: ocp.CheckpointManager, step: int, state, data_state, identity) -> bool:
  """Saves a checkpoint (asynchronously when the manager is async).

  Args:
    manager: the CheckpointManager.
    step: the step number.
    state: the TrainState.
    data_state: the input iterator's JSON-serialisable state.
    identity: `run_identity(...)` of the run.

  Returns:
    Whether a save was started.
  """
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      meta=ocp.args.JsonSave(identity)), force=True)


def check_identity(saved: dict[str, Any], current: dict[str, Any], directory: str) -> None:
  """Raises a ValueError naming every key in which the saved run differs from this one."""
  saved_flat, current_flat = _flatten(saved), _flatten(current)
  differing = sorted(k for k in saved_flat.keys() | current_flat.keys()
                     if saved_flat.get(k) != current_flat.get(k))
  if differing:
    details = "; ".join(f"{k}: checkpoint {saved_flat.get(k)!r} != config {current_flat.get(k)!r}"
                        for k in differing)
    raise ValueError(
        f"{directory} holds a checkpoint from an incompatible config ({details}). "
        "Use another --workdir or delete the old checkpoints.")


def restore_latest(manager: ocp.CheckpointManager, abstract_state, identity):
  """Restores the latest checkpoint onto the shardings of `abstract_state`.

  Args:
    manager: the CheckpointManager.
    abstract_state: TrainState of jax.ShapeDtypeStruct with shardings (the restore target).
    identity: `run_identity(...)` of this run; must equal the saved one.

  Returns:
    (TrainState, data_state) or None when the directory holds no finished checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_identity(meta, json.loads(json.dumps(identity)), str(manager.directory))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  state = jax.tree.unflatten(jax.tree.structure(abstract_state),
                             jax.tree.leaves(restored["state"]))
  return state, restored["data"]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{name}."))
    else:
      flat[name] = value
  return flat
