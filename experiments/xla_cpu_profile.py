"""What a compiled XLA:CPU program executes, statically and as timed by the profiler.

`static_summary` reads the optimised HLO: the top-level instructions (each one thunk of
XLA:CPU's runtime) by opcode, and XLA's flop and byte counts. `runtime_summary` traces a few
executions with `jax.profiler` (its Perfetto JSON; XLA:CPU records one event per executed thunk,
named after the HLO instruction) and splits the thread time between matmul thunks (dots, and
fusions that contain one) and everything else, with the costliest other thunks named. Used by
experiments/bench_step.py to show where a step's time goes.
"""

import collections
import glob
import gzip
import json
import os
import re
from collections.abc import Callable

import jax

_SKIPPED_OPCODES = ("parameter", "constant", "get-tuple-element", "tuple")


def _instructions(text: str) -> dict[str, tuple[str, bool]]:
  """Top-level instruction name -> (opcode or fusion kind, whether it runs a matmul)."""
  computations, current = {}, None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
    if header and line.rstrip().endswith("{"):
      current = computations.setdefault(header.group(1), [])
    elif current is not None and line.strip() != "}":
      current.append(line)
  fused = set(re.findall(r"calls=%([\w.\-]+)", text))
  has_dot = {name: any(re.search(r"= \S+ (dot|convolution)\(", line) for line in body)
             for name, body in computations.items()}
  result = {}
  for name, body in computations.items():
    if name in fused:
      continue
    for line in body:
      op = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = \S+ (\w[\w\-]*)\(", line)
      if not op or op.group(2) in _SKIPPED_OPCODES:
        continue
      called = re.search(r"calls=%([\w.\-]+)", line)
      matmul = op.group(2) in ("dot", "convolution") or bool(called and has_dot.get(
          called.group(1)))
      result[op.group(1)] = (op.group(2), matmul)
  return result


def static_summary(compiled) -> dict:
  """Top-level instructions by opcode, XLA's flops and bytes accessed of `compiled`.

  Args:
    compiled: a `jax.stages.Compiled`.

  Returns:
    {"thunks", "by_opcode", "flops", "bytes_accessed"}.
  """
  counts = collections.Counter(op for op, _ in _instructions(compiled.as_text()).values())
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {"thunks": sum(counts.values()), "by_opcode": dict(counts.most_common()),
          "flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def runtime_summary(run: Callable[[int], float], steps: int, compiled, directory: str,
                    top: int = 8) -> dict:
  """Thread time per execution of `compiled`'s thunks, from a profiler trace of `run(steps)`.

  Args:
    run: run(steps) executes `compiled` `steps` times and returns the seconds taken.
    steps: executions traced.
    compiled: the `jax.stages.Compiled` that `run` executes.
    directory: where the trace is written.
    top: how many of the costliest non-matmul thunks to name.

  Returns:
    {"wall_ms", "thunk_thread_ms", "matmul_thread_ms", "other_thread_ms", "top_other"} per
    execution; thread time sums over the runtime's threads, so it may exceed the wall time.
  """
  instructions = _instructions(compiled.as_text())
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    seconds = run(steps)
  (path,) = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  matmul_us, other_us = 0.0, collections.Counter()
  for event in events:
    kind = instructions.get(event.get("name")) if event.get("ph") == "X" else None
    if kind is None:
      continue
    if kind[1]:
      matmul_us += event.get("dur", 0)
    else:
      other_us[f"{event['name']} ({kind[0]})"] += event.get("dur", 0)
  per_step = 1e-3 / steps
  return {"wall_ms": 1e3 * seconds / steps,
          "thunk_thread_ms": (matmul_us + sum(other_us.values())) * per_step,
          "matmul_thread_ms": matmul_us * per_step,
          "other_thread_ms": sum(other_us.values()) * per_step,
          "top_other": {name: us * per_step for name, us in other_us.most_common(top)}}
