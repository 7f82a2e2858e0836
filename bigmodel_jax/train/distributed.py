"""Starting a multi-process (multi-host) run: `jax.distributed.initialize` behind the config.

A run of N processes is N copies of the same command: each process owns its local devices, reads
its own rows of every global batch (data/pipeline.py), and all of them build one global mesh over
every device, so the train step, its collectives and the orbax checkpoints are written once for
any number of processes (JAX multi-controller SPMD; see the JAX "multi-process" guide).

`distributed.initialize=True` calls `jax.distributed.initialize`, which detects the coordinator,
the process count and this process's id on SLURM, Cloud TPU pods, Open MPI and Kubernetes; on a
single machine (or anywhere else) they are given as `distributed.coordinator_address`,
`distributed.num_processes` and `distributed.process_id`. This must run before anything touches
the devices, so experiments call it first.
"""

from collections.abc import Callable
from typing import TypeVar

import jax
import ml_collections
from jax.experimental import multihost_utils

T = TypeVar("T")

# The keys passed on to jax.distributed.initialize, and their "detect it" values.
_UNSET = {"coordinator_address": "", "num_processes": 0, "process_id": -1}


def initialize(distributed: ml_collections.ConfigDict) -> None:
  """Joins this process to a multi-process run as the `distributed` config section says.

  Args:
    distributed: the `distributed` config section (see configs/default.py).

  Raises:
    ValueError: naming the key, when addresses or ids are given without
      `distributed.initialize`, or are out of range.
  """
  explicit = {k: distributed[k] for k, unset in _UNSET.items() if distributed[k] != unset}
  if not distributed.initialize:
    given = [*explicit, *(["cpu_devices_per_process"] if distributed.cpu_devices_per_process
                          else [])]
    if given:
      raise ValueError(f"{', '.join('distributed.' + k for k in given)} set, but "
                       "distributed.initialize is False")
    return
  if "num_processes" in explicit and not 0 <= distributed.process_id < distributed.num_processes:
    raise ValueError(f"distributed.process_id ({distributed.process_id}) must be in "
                     f"[0, distributed.num_processes={distributed.num_processes})")
  if distributed.cpu_devices_per_process:
    # Virtual CPU devices, and collectives between CPU processes over TCP (gloo): this is how a
    # multi-process run is tested on one machine. Both must be set before the backend starts.
    jax.config.update("jax_num_cpu_devices", distributed.cpu_devices_per_process)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(initialization_timeout=distributed.initialization_timeout_s,
                             **explicit)


def lead_first(fn: Callable[[], T], name: str) -> T:
  """Runs `fn` on process 0 first, then on every other process (e.g. building a data set once).

  Args:
    fn: a function every process calls; process 0's call fills shared caches (a TFDS data set,
      a tokenizer model) that the others then read instead of writing them concurrently.
    name: a name for the barrier between the two rounds.

  Returns:
    This process's `fn()`.
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"bigmodel_jax:{name}")
  return result if jax.process_index() == 0 else fn()
