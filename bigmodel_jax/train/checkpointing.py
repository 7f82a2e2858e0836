"""Orbax checkpoints of the train state, the input iterator position and the run's identity.

Each checkpoint holds five items: `state` (the sharded TrainState), `data` (the input iterator's
JSON state, so a resumed run sees exactly the batches it would have seen), `meta` (the model
config and optimizer name, to refuse resuming from an incompatible run), `checksums` (a
fingerprint of every state leaf) and `counters` (the loop's own counters, e.g. skipped steps).

Orbax writes each step into a temporary directory and renames it when complete, and `latest_step`
only lists finished steps, so a partially written checkpoint (a killed process, a full disk) is
never taken as the latest. A finished checkpoint that was damaged afterwards (truncated or
overwritten files) is caught on restore: either orbax fails to read it, or the fingerprint of the
arrays it returns differs from the one saved with them. `restore_latest` then moves it aside and
falls back to the previous one, saying so. All processes of a multi-process run call every
function here together (orbax's saves and restores are collective).
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from bigmodel_jax.models import presets
from bigmodel_jax.models.config import FEATURES
from bigmodel_jax.train.errors import CheckpointError, IncompatibleCheckpointError

ITEMS = ("state", "data", "meta", "checksums", "counters")
CORRUPT_DIR = "corrupt"  # unreadable checkpoints are moved to <checkpoints>/../<CORRUPT_DIR>/


def make_manager(directory: str, *, max_to_keep: int, async_save: bool = True
                 ) -> ocp.CheckpointManager:
  """A CheckpointManager for `directory` (created if missing).

  Args:
    directory: where the step directories go.
    max_to_keep: number of most recent checkpoints kept.
    async_save: write in a background thread while training continues.

  Returns:
    An orbax CheckpointManager with the items of ITEMS.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(epath.Path(directory).absolute(), options=options,
                               item_names=ITEMS)


def run_identity(model_config, optimizer_name: str) -> dict[str, Any]:
  """What must match for a checkpoint to be resumable: the model config and the optimizer name.

  The other `opt.*` settings (learning rate, schedule, betas, ...) may change between runs: a
  rerun with a lower `opt.lr` resumes the same optimizer state, and `model.scan_unroll` (how the
  stacked layers are executed, not what is stored) may change too.
  """
  model = (dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config)
           else dict(model_config))
  model.pop("scan_unroll", None)
  return {"model": model, "opt.name": optimizer_name}


def save(manager: ocp.CheckpointManager, step: int, state, data_state, identity,
         counters: dict[str, int]) -> bool:
  """Saves a checkpoint (asynchronously when the manager is async).

  Args:
    manager: the CheckpointManager.
    step: the step number.
    state: the TrainState.
    data_state: the input iterator's JSON-serialisable state.
    identity: `run_identity(...)` of the run.
    counters: the loop's JSON-serialisable counters, returned again by `restore_latest`.

  Returns:
    Whether a save was started.

  Raises:
    CheckpointError: naming the directory and the last good checkpoint, when writing fails (here
      or in the background write of the previous save).
  """
  try:
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(identity),
        checksums=ocp.args.JsonSave(fingerprint(state)),
        counters=ocp.args.JsonSave(counters)), force=True)
  except Exception as e:  # orbax raises whatever the storage raised, possibly re-wrapped
    raise _write_error(manager, e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the background write; raises like `save` when it failed."""
  try:
    manager.wait_until_finished()
  except Exception as e:
    raise _write_error(manager, e) from e


def close(manager: ocp.CheckpointManager, *, quiet: bool = False) -> None:
  """Waits for the background write, then closes the manager (its threads end) even if it failed.

  Args:
    manager: the CheckpointManager.
    quiet: log a failed write as a warning instead of raising (while another error is on its way).

  Raises:
    CheckpointError: like `save`, when the background write failed and `quiet` is False.
  """
  try:
    wait_until_finished(manager)
  except CheckpointError as e:
    if not quiet:
      raise
    logging.warning("%s", e)
  finally:
    manager.close()


def last_good(directory: str) -> int | None:
  """The newest completely written step of `directory`, or None."""
  steps = finished_steps(directory)
  return steps[-1] if steps else None


def _write_error(manager: ocp.CheckpointManager, error: Exception) -> CheckpointError:
  good = last_good(str(manager.directory))
  last = "none" if good is None else f"step {good}, intact"
  return CheckpointError(
      f"writing a checkpoint to {manager.directory} failed ({type(error).__name__}: {error}). "
      f"Last good checkpoint: {last}. Free disk space or fix permissions, then run the same "
      "command again to resume from it.")


def finished_steps(directory: str) -> list[int]:
  """The steps of `directory` whose checkpoint was completely written, ascending."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check_writable(directory: str) -> None:
  """Fails early, naming the path, if files cannot be written to `directory`.

  Args:
    directory: a directory (created if missing).

  Raises:
    CheckpointError: when the directory cannot be created or written.
  """
  probe = os.path.join(directory, f".write_probe_{jax.process_index()}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"0" * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise CheckpointError(f"{directory} is not writable ({e}); choose another --workdir or fix its "
                  "permissions") from e


def check_free_space(directory: str, needed_bytes: int) -> None:
  """Raises a CheckpointError naming `directory` if its disk has less than `needed_bytes` free."""
  free = shutil.disk_usage(directory).free
  if free < needed_bytes:
    raise CheckpointError(f"{directory} has {free:,} bytes free, but a checkpoint needs "
                          f"{needed_bytes:,}; free disk space or choose another --workdir")


@jax.jit
def _leaf_fingerprints(tree):
  def one(x):
    # 8-byte values become two uint32 words (a trailing axis), narrower ones one widened word.
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    words = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    odd = jnp.arange(words.size, dtype=jnp.uint32) * 2 + 1
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * odd, dtype=jnp.uint32)])

  return jax.tree.map(one, tree)


def fingerprint(tree) -> dict[str, list[int]]:
  """Two 32-bit sums per leaf: of its raw words, and of its words times 2i+1 (i: position).

  Integer sums wrap around exactly whatever the order, so the fingerprint of an array does not
  depend on its sharding or on the number of processes; any single changed word changes the
  position-weighted sum (its multiplier is odd, hence invertible mod 2^32). It detects damage
  (truncation, overwritten bytes), not deliberate tampering. A hand-written check because orbax
  (0.12) verifies no checksums of array data on restore.

  Args:
    tree: a pytree of jax arrays (sharded or not).

  Returns:
    {leaf path: [sum, weighted sum]}.
  """
  sums = multihost_utils.process_allgather(_leaf_fingerprints(tree), tiled=True)
  flat = jax.tree_util.tree_flatten_with_path(sums)[0]
  # "params/embed/embedding", "opt_state/1/0/mu/...": the same for a TrainState and for the
  # nested dicts and lists that orbax returns without a target.
  return {jax.tree_util.keystr(path, simple=True, separator="/"): [int(v) for v in
                                                                   np.asarray(value)]
          for path, value in flat}


def upgraded_identity(saved: dict[str, Any]) -> dict[str, Any]:
  """`saved` with a model named by `architecture` (checkpoints from before the features) given
  that preset's features instead, so that a run of the same model still resumes."""
  model = dict(saved.get("model") or {})
  name = model.pop("architecture", None)
  if name not in presets.PRESETS or any(f in model for f in FEATURES):
    return saved
  return {**saved, "model": {**{f: presets.PRESETS[name][f] for f in FEATURES}, **model}}


def check_identity(saved: dict[str, Any], current: dict[str, Any], directory: str) -> None:
  """Raises an IncompatibleCheckpointError naming every key in which the saved run differs."""
  saved_flat, current_flat = _flatten(saved), _flatten(current)
  differing = sorted(k for k in saved_flat.keys() | current_flat.keys()
                     if saved_flat.get(k) != current_flat.get(k))
  if differing:
    details = "; ".join(f"{k}: checkpoint {saved_flat.get(k)!r} != config {current_flat.get(k)!r}"
                        for k in differing)
    raise IncompatibleCheckpointError(
        f"{directory} holds a checkpoint from an incompatible config ({details}). "
        "Use another --workdir or delete the old checkpoints.")


def restore_latest(manager: ocp.CheckpointManager, abstract_state, identity):
  """Restores the newest readable checkpoint onto the shardings of `abstract_state`.

  A checkpoint that fails to read, or whose arrays do not match their saved fingerprint, is
  logged as a warning naming its step and path, moved to `<checkpoints>/../corrupt/`, and the
  previous one is tried.

  Args:
    manager: the CheckpointManager.
    abstract_state: TrainState of jax.ShapeDtypeStruct with shardings (the restore target).
    identity: `run_identity(...)` of this run; must equal the saved one.

  Returns:
    (TrainState, data_state, counters) or None when the directory holds no finished checkpoint.

  Raises:
    IncompatibleCheckpointError: when the checkpoint comes from an incompatible config.
    CheckpointError: when checkpoints exist but none of them can be read.
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      check_identity(upgraded_identity(meta), json.loads(json.dumps(identity)),
                     str(manager.directory))
      restored = _restore_verified(manager, step, abstract_state)
    except IncompatibleCheckpointError:
      raise
    except Exception as e:  # whatever a damaged file makes orbax or tensorstore raise
      failures.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
      logging.warning("checkpoint %s/%d is unreadable (%s); falling back to the previous one",
                      manager.directory, step, failures[-1])
      _move_aside(manager, step)
      continue
    if failures:
      logging.warning("resumed from step %d of %s after skipping unreadable checkpoints",
                      step, manager.directory)
    return restored
  if failures:
    raise CheckpointError(
        f"no checkpoint in {manager.directory} is readable: {'; '.join(failures)}")
  return None


def _restore_verified(manager: ocp.CheckpointManager, step: int, abstract_state):
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
      checksums=ocp.args.JsonRestore(), counters=ocp.args.JsonRestore()))
  state = jax.tree.unflatten(jax.tree.structure(abstract_state),
                             jax.tree.leaves(restored["state"]))
  _check_fingerprint(state, restored["checksums"])
  return state, restored["data"], restored["counters"]


def _check_fingerprint(state, saved: dict[str, list[int]]) -> None:
  actual = fingerprint(state)
  differing = sorted(k for k in actual.keys() | saved.keys() if actual.get(k) != saved.get(k))
  if differing:
    raise ValueError(f"the restored arrays differ from their saved fingerprint: {differing[:5]}")


def _move_aside(manager: ocp.CheckpointManager, step: int) -> None:
  """Moves a damaged step out of the manager's sight (process 0; the others wait for it)."""
  if jax.process_index() == 0:
    target = os.path.join(os.path.dirname(str(manager.directory)), CORRUPT_DIR)
    os.makedirs(target, exist_ok=True)
    os.replace(os.path.join(str(manager.directory), str(step)),
               os.path.join(target, f"{step}.{len(os.listdir(target))}"))
  multihost_utils.sync_global_devices(f"bigmodel_jax:moved_aside_{step}")
  manager.reload()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{name}."))
    else:
      flat[name] = value
  return flat


def load_state_on_host(directory: str, step: int):
  """The TrainState tree of a checkpoint as numpy arrays, whatever mesh or processes saved it.

  Args:
    directory: a checkpoints directory.
    step: the step to read.

  Returns:
    The saved state as a pytree (dicts and lists) of numpy arrays.

  Raises:
    ValueError: when the arrays do not match the fingerprint saved with them.
  """
  path = epath.Path(directory).absolute() / str(step)
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path / "state").item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          metadata)
    state = checkpointer.restore(path / "state", target)
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    _check_fingerprint(state, checkpointer.restore(path / "checksums"))
  return jax.device_get(state)
