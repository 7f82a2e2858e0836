r"""Kill-and-resume soak: SIGKILL the pre-training command at random moments, restart it, compare.

  python -m experiments.soak --config=configs/soak.py --workdir=/tmp/soak

Runs `experiments.pretrain` on the config (without its `soak` section's effect on training) in
`workdir/run`, and `soak.kills` times: waits until the run has logged a new step, sends SIGKILL
after a uniform random delay of up to `soak.max_delay_s` (so kills land in steps, in evaluations,
in compilation and in asynchronous checkpoint writes alike), and starts the same command again.
With `soak.num_processes` > 1 every run is that many local JAX processes, and each signal goes to
all of them (a whole job killed or preempted).
Then `soak.sigterms` preemptions (SIGTERM: the run must save and exit with 143), then a final
launch that runs to the end. An uninterrupted run of the same command goes to
`workdir/uninterrupted`, and the final states are compared bit for bit; every checkpoint left in
`workdir/run` must read back and match the fingerprint saved with it.

Per interruption (metrics.jsonl): the last step logged before the signal, the step the next
launch resumed from, the steps lost (their difference), and the time to resume (from the
relaunch to its first newly trained step: interpreter start, JAX start-up, restore and
compilation). Steps lost <= 0 means nothing was lost (a SIGTERM saves the step in progress).
summary.json holds the totals and `bit_identical`; soak.png plots, per interruption, the step
reached and resumed from, the steps lost and the time to resume.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import matplotlib
import ml_collections
import numpy as np
from absl import app, flags

from bigmodel_jax.train import checkpointing, metrics, outputs, plots
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.loop import TRAINER_READS
from bigmodel_jax.train.preemption import PREEMPTED_EXIT_CODE
from experiments import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config_file(config: ml_collections.ConfigDict, directory: str) -> str:
  """A config file for `--config=` that returns `config` (overrides included) as it is now."""
  os.makedirs(directory, exist_ok=True)
  json_path = os.path.join(directory, "launch_config.json")
  with open(json_path, "w") as f:
    f.write(config.to_json())
  path = os.path.join(directory, "launch_config.py")
  with open(path, "w") as f:
    f.write(f'"""The config of {directory}, frozen by experiments.soak."""\n\nimport json\n\n'
            "import ml_collections\n\n\ndef get_config():\n"
            f"  with open({json_path!r}) as f:\n"
            "    return ml_collections.ConfigDict(json.load(f))\n")
  return path


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(config_file: str, workdir: str, num_processes: int = 1, log_path: str | None = None
           ) -> list[subprocess.Popen]:
  """Starts `python -m experiments.pretrain` as one process or as N local JAX processes.

  Args:
    config_file: the `--config` file.
    workdir: the `--workdir`.
    num_processes: 1, or N processes of 4 virtual CPU devices each joined over loopback.
    log_path: where the processes' stdout and stderr go (`<log_path>.<i>`); None: pipes
      (read them concurrently: one process blocked on a full pipe stalls all of them).

  Returns:
    The started processes.
  """
  command = [sys.executable, "-m", "experiments.pretrain", f"--config={config_file}",
             f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if num_processes > 1:
    env["XLA_FLAGS"] = ""
    port = _free_port()
    commands = [[
        *command, "--config.distributed.initialize=True",
        f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        f"--config.distributed.num_processes={num_processes}",
        f"--config.distributed.process_id={i}",
        "--config.distributed.cpu_devices_per_process=4"] for i in range(num_processes)]
  else:
    commands = [command]
  procs = []
  for i, args in enumerate(commands):
    out = open(f"{log_path}.{i}", "w") if log_path else subprocess.PIPE  # noqa: SIM115
    procs.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  text=True))
  return procs


def _logged_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.endswith("\n")]  # not one being written
  return [r["step"] for r in rows if "loss" in r]


def _wait(procs: list[subprocess.Popen], timeout_s: float) -> list[int]:
  deadline = time.time() + timeout_s
  for proc in procs:
    proc.wait(timeout=max(1.0, deadline - time.time()))
  return [proc.returncode for proc in procs]


def _watch(config, run_dir: str, config_file: str, sig: int | None, delay_s: float,
           name: str) -> dict:
  """One launch: waits for its first newly trained step, then signals it `delay_s` later with
  `sig` (None: lets it finish) and waits for its exit."""
  logged_before = len(_logged_steps(run_dir))
  launched = time.time()
  procs = launch(config_file, run_dir, config.soak.num_processes,
                 os.path.join(os.path.dirname(run_dir), f"launch_{name}.log"))
  while len(_logged_steps(run_dir)) == logged_before:
    if any(p.poll() is not None for p in procs):
      raise RuntimeError(f"launch {name} ended before training; see launch_{name}.log.*")
    if time.time() - launched > config.soak.timeout_s:
      raise TimeoutError(f"launch {name} logged no step in {config.soak.timeout_s} s")
    time.sleep(0.02)
  watch = {"resumed_from": _logged_steps(run_dir)[logged_before] - 1,  # log_every is 1
           "startup_s": time.time() - launched}
  if sig is not None:
    time.sleep(delay_s)
    watch["last_step_before_signal"] = _logged_steps(run_dir)[-1]
    for proc in procs:
      proc.send_signal(sig)
  watch["exit_codes"] = _wait(procs, config.soak.timeout_s)
  return watch


def _verify_checkpoints(run_dir: str) -> list[int]:
  """Every finished checkpoint reads back and matches its fingerprint; returns their steps."""
  directory = os.path.join(run_dir, "checkpoints")
  steps = checkpointing.finished_steps(directory)
  for step in steps:
    checkpointing.load_state_on_host(directory, step)  # raises on any mismatch
  return steps


def _bit_identical(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: np.asarray(x).dtype == np.asarray(y).dtype
      and np.asarray(x).tobytes() == np.asarray(y).tobytes(), a, b)))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The soak; writes metrics.jsonl, summary.json and soak.png into `workdir`.

  Args:
    config: a configs/soak.py config (train.log_every must be 1).
    workdir: the output directory.

  Returns:
    The summary.
  """
  if config.train.log_every != 1:
    raise ValueError("experiments.soak needs train.log_every=1 to know the last step reached")
  run_dir, reference_dir = os.path.join(workdir, "run"), os.path.join(workdir, "uninterrupted")
  for d in (run_dir, reference_dir):
    if os.path.exists(d):
      raise FileExistsError(f"{d} exists; the soak needs a fresh --workdir")
  # experiments.pretrain refuses sections it does not read
  pretrain_config = derive(config, drop=("soak",))
  config_file = write_config_file(pretrain_config, workdir)
  rng = random.Random(config.soak.seed)
  signals = [signal.SIGKILL] * config.soak.kills + [signal.SIGTERM] * config.soak.sigterms
  start, launches = time.time(), []
  for index, sig in enumerate([*signals, None]):
    launches.append(_watch(config, run_dir, config_file, sig,
                           rng.uniform(0, config.soak.max_delay_s), str(index)))
    if sig is not None and launches[-1]["last_step_before_signal"] >= config.train.steps:
      raise RuntimeError(f"the run finished before signal {index}: raise train.steps or lower "
                         "soak.max_delay_s")
    print(f"[soak] launch {index} resumed from step {launches[-1]['resumed_from']}"
          + (f"; {signal.Signals(sig).name} at step {launches[-1]['last_step_before_signal']}"
             if sig else ""), flush=True)
  if launches[-1]["exit_codes"] != [0] * config.soak.num_processes:
    raise RuntimeError(f"the final launch exited with {launches[-1]['exit_codes']}")
  events = []
  for sig, before, after in zip(signals, launches, launches[1:]):
    events.append({"signal": signal.Signals(sig).name, "exit_codes": before["exit_codes"],
                   "last_step_before_signal": before["last_step_before_signal"],
                   "resumed_from": after["resumed_from"],
                   "steps_lost": before["last_step_before_signal"] - after["resumed_from"],
                   "time_to_resume_s": after["startup_s"]})
  writer = metrics.MetricWriter(workdir)
  for index, event in enumerate(events):
    writer.write(index, {k: v for k, v in event.items() if k not in ("signal", "exit_codes")})
  writer.close()
  reference = _watch(config, reference_dir, config_file, None, 0.0, "uninterrupted")
  if reference["exit_codes"] != [0] * config.soak.num_processes:
    raise RuntimeError(f"the uninterrupted run exited with {reference['exit_codes']}")
  checked = _verify_checkpoints(run_dir)
  corrupt = os.path.join(run_dir, checkpointing.CORRUPT_DIR)
  final = config.train.steps
  bit_identical = _bit_identical(
      checkpointing.load_state_on_host(os.path.join(run_dir, "checkpoints"), final),
      checkpointing.load_state_on_host(os.path.join(reference_dir, "checkpoints"), final))
  kills = [e for e in events if e["signal"] == "SIGKILL"]
  terms = [e for e in events if e["signal"] == "SIGTERM"]
  summary = {
      "kills_survived": len(kills),
      "sigterms_survived": len(terms),
      "sigterm_exit_codes_ok": all(set(e["exit_codes"]) == {PREEMPTED_EXIT_CODE} for e in terms),
      "steps_lost_per_kill": [e["steps_lost"] for e in kills],
      "steps_lost_per_sigterm": [e["steps_lost"] for e in terms],
      "time_to_resume_s": [round(e["time_to_resume_s"], 2) for e in events],
      "mean_time_to_resume_s": float(np.mean([e["time_to_resume_s"] for e in events]))
      if events else None,
      "fresh_start_to_first_step_s": launches[0]["startup_s"],
      "checkpoint_every": config.train.checkpoint_every,
      "steps": final,
      "num_processes": config.soak.num_processes,
      "checkpoints_left_and_verified": checked,
      "corrupt_checkpoints_found": sorted(os.listdir(corrupt)) if os.path.isdir(corrupt) else [],
      "bit_identical": bit_identical,
      "wall_time_s": time.time() - start,
  }
  outputs.write_summary(summary, workdir)
  _plot(events, os.path.join(workdir, "soak.png"))
  return summary


def _plot(events: list[dict], path: str) -> None:
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  names = [f"{i}:{e['signal'][3:]}" for i, e in enumerate(events)]
  ax0.plot(names, [e["last_step_before_signal"] for e in events], "x", color="red",
           label="last step logged before the signal")
  ax0.plot(names, [e["resumed_from"] for e in events], "o", color="gray",
           label="the next launch resumed from")
  ax0.set_xlabel("interruption")
  ax0.set_ylabel("step")
  ax0.legend()
  ax1.bar(names, [e["steps_lost"] for e in events], color="tab:orange", label="steps lost")
  ax1.bar(names, [e["time_to_resume_s"] for e in events], color="tab:blue", alpha=0.4,
          label="time to resume (s)")
  ax1.set_xlabel("interruption")
  ax1.legend()
  plots.save_figure(fig, path, dpi=110)


# The config's top-level keys (experiments/cli.py refuses any other).
READS = (*TRAINER_READS, "distributed", "soak")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(json.dumps(run(flags.FLAGS.config, flags.FLAGS.workdir), indent=2))


if __name__ == "__main__":
  cli.define_config_and_workdir("Soak config file.", "Output directory (must not hold a soak).")
  cli.run(main, reads=READS)
