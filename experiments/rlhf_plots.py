"""Figures and target checks of experiments.rlhf."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt

from bigmodel_jax.train import plots

CURVES = (("eval_greedy_reward", "greedy reward (held-out)"),
          ("sampled_reward", "sampled reward"), ("kl", "KL to reference (nats / response)"),
          ("response_length", "response length (tokens)"))


def plot_curves(curves: dict[str, list[dict]], sft: dict, path: str) -> None:
  """Greedy and sampled reward, KL and response length against step, one line per method."""
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  for ax, (key, label) in zip(axes.flat, CURVES):
    for name, rows in curves.items():
      points = [(r["step"], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), label=name, marker="o" if key.startswith("eval") else None,
                markersize=3)
    if key == "eval_greedy_reward":
      ax.axhline(sft["greedy_reward"], color="gray", linestyle="--", label="SFT")
    ax.set_xlabel("RL step")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes.flat[0].legend(fontsize=8)
  plots.save_figure(fig, path)


def plot_cost(summary: dict, path: str) -> None:
  """State bytes and step time (split by phase) per method."""
  names = list(summary["methods"])
  methods = summary["methods"]
  fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
  ax_mem.bar(names, [methods[n]["state_bytes"] / 2**20 for n in names])
  ax_mem.set_ylabel("training-state MiB (exact)")
  bottom = [0.0] * len(names)
  for phase in ("generation", "reward", "reference", "update"):
    values = [methods[n]["phase_time_s"][phase] for n in names]
    ax_time.bar(names, values, bottom=bottom, label=phase)
    bottom = [b + v for b, v in zip(bottom, values)]
  ax_time.set_ylabel("seconds per step (phases jitted apart)")
  ax_time.legend(fontsize=8)
  for ax in (ax_mem, ax_time):
    ax.tick_params(axis="x", rotation=30)
  plots.save_figure(fig, path)


def targets(summary: dict) -> dict | None:
  """The issue's targets for ReMax against PPO and the SFT model (None without both)."""
  methods = summary["methods"]
  if "remax" not in methods or "ppo" not in methods:
    return None
  remax, ppo = methods["remax"], methods["ppo"]
  result = {
      "remax_greedy_gain_over_sft": remax["final_greedy_reward"] - summary["sft"]["greedy_reward"],
      "remax_minus_ppo_greedy": remax["final_greedy_reward"] - ppo["final_greedy_reward"],
      "state_bytes_ratio_remax_over_ppo": remax["state_bytes"] / ppo["state_bytes"],
      "step_time_ratio_remax_over_ppo": remax["step_time_s"] / ppo["step_time_s"],
  }
  result["remax_within_0.02_of_ppo_or_above"] = result["remax_minus_ppo_greedy"] >= -0.02
  result["state_bytes_ratio_at_most_0.6"] = result["state_bytes_ratio_remax_over_ppo"] <= 0.6
  result["remax_faster_than_ppo"] = result["step_time_ratio_remax_over_ppo"] < 1
  variance = summary.get("gradient_variance", {})
  if "remax" in variance and "reinforce" in variance:
    result["variance_ratio_remax_over_reinforce"] = (
        variance["remax"]["total_variance"] / variance["reinforce"]["total_variance"])
  return result
