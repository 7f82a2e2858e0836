"""Tables, pass criteria and figures of experiments/semi_open.py.

The spec's implementation checks (A2, A5) and expected phenomena (E1-E6) of Huang et al.,
arXiv 2410.11182, as operationalised in shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md A.7.10;
each is reported with the numbers behind it, a FAIL of a phenomenon being a finding.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from bigmodel_jax.semi_open.recovery_difficulty import scara_choice
from bigmodel_jax.train import plots


def rd_table(curve: dict, tolerance: float) -> dict:
  """T1 of one re-init scale: RD(n) over seeds, RD_full and SCARA's choices.

  Args:
    curve: `rd_curve(...)`, {"rd": [seeds, L + 1], "rd_full": [seeds]}.
    tolerance: tau.

  Returns:
    The table as a JSON-ready dict.
  """
  rd, full = curve["rd"], curve["rd_full"]
  mean, num_layers = rd.mean(0), rd.shape[1] - 1
  n_star = scara_choice(mean, full.mean(), tolerance)
  return {"rd_mean": mean.tolist(), "rd_std": rd.std(0).tolist(),
          "rd_per_seed": rd.tolist(), "threshold_lhs": ((1 + tolerance) * mean).tolist(),
          "rd_full_mean": float(full.mean()), "rd_full_per_seed": full.tolist(),
          "n_star": n_star, "n_star_flagged_fully_closed": n_star == num_layers,
          "n_star_seed0": scara_choice(rd[0], full[0], tolerance),
          "n_star_vs_rd_L": scara_choice(mean, mean[-1], tolerance)}


def _check(rule: str, passed: bool, **values) -> dict:
  return {"rule": rule, "passed": bool(passed), "values": values}


def _rd_criteria(config, summary: dict, num_layers: int) -> dict:
  """A2 and the RD half of E6."""
  rd = summary["rd"]
  table = rd["tables"][rd["reinit_scale"]]
  rd0 = np.asarray(table["rd_per_seed"])[:, 0]
  gap = float(np.max(np.abs(rd0 - rd["victim_ce"])))
  full = table["rd_full_mean"]
  drops = [table["rd_mean"][n] - table["rd_mean"][n + 1] for n in range(num_layers)]
  noise = config.criteria.rd_noise
  return {
      "A2": _check("RD(0) = the victim's CE on D_RD to 1e-6 (every seed); RD_full in [5.4, 7.0]",
                   gap <= 1e-6 and 5.4 <= full <= 7.0, max_abs_gap=gap, rd_full=full,
                   victim_ce=rd["victim_ce"]),
      "E6_rd": _check(f"mean RD(n+1) >= RD(n) - {noise}", max(drops) <= noise,
                      largest_drop=float(max(drops)), rd_mean=table["rd_mean"]),
  }


def _amplification_criterion(summary: dict, num_layers: int) -> dict:
  """The D2 half of E6: A(l) larger for the lower half of the blocks than the upper."""
  half = num_layers // 2
  means = {sigma: (float(np.mean(d["amplification"][:half])),
                   float(np.mean(d["amplification"][half:])))
           for sigma, d in summary["diagnostics"]["d2"].items()}
  return _check("D2: mean A(l) over the lower half of the blocks > over the upper half, at "
                "every sigma", all(low > high for low, high in means.values()),
                lower_vs_upper=means)


def _arr(runs: dict, name: str) -> float:
  return runs[name]["arr"]


def _recovery_criteria(config, summary: dict, num_layers: int) -> dict:
  """A5 and E1, E2, E3, E5."""
  cc, rec = config.criteria, summary["recovery"]
  runs, n_star, m = rec["ft_all"], summary["rd"]["n_star"], cc.margin
  l_orig = float(np.mean(rec["victim"]["loss"]))
  singles = sorted((int(k[2:]), _arr(runs, k)) for k in runs if k.startswith("S_"))
  rho = float(stats.spearmanr(*zip(*singles)).statistic) if len(singles) > 2 else float("nan")
  c0 = _arr(runs, "C0")
  l_t = next((layer for layer, arr in singles if arr >= cc.transition_fraction * c0), None)
  names = [k for k in runs if k != "C0"] + ["C0"]
  rd = [runs[k]["rd"] for k in names]
  arr = [runs[k]["arr"] for k in names]
  pearson = float(stats.pearsonr(rd, arr).statistic)
  bottom = {"B_2": _arr(runs, "B_2") if "B_2" in runs else None,
            "T_2": _arr(runs, "T_2"), "SCARA": _arr(runs, "SCARA"),
            f"T_{n_star}": _arr(runs, f"T_{n_star}")}
  e1 = ((bottom["B_2"] is None or bottom["B_2"] <= bottom["T_2"] - m)
        and bottom["SCARA"] <= bottom[f"T_{n_star}"] - m)
  sap = runs["SAP-like"]
  return {
      "A5": _check(f"C0 (fine-tuned victim): L_rec <= L_orig + {cc.c0_slack}",
                   runs["C0"]["l_rec"] <= l_orig + cc.c0_slack, l_rec=runs["C0"]["l_rec"],
                   l_orig=l_orig),
      "E1": _check(f"ARR(B_2) <= ARR(T_2) - {m} and ARR(bottom n*) <= ARR(top n*) - {m}", e1,
                   **bottom),
      "E2": _check(f"Spearman(l, ARR(S_l)) >= {cc.spearman_min}", rho >= cc.spearman_min,
                   spearman=rho, arr_by_layer=dict(singles), transition_layer=l_t),
      "E3": _check(f"ARR(SCARA) <= ARR(SAP-like) + {m} and closed ratio(SCARA) <= 0.5 closed "
                   "ratio(SAP-like)", bottom["SCARA"] <= sap["arr"] + m and
                   runs["SCARA"]["closed_ratio"] <= 0.5 * sap["closed_ratio"],
                   arr_scara=bottom["SCARA"], arr_sap=sap["arr"],
                   closed_scara=runs["SCARA"]["closed_ratio"],
                   closed_sap=sap["closed_ratio"], arr_fully_closed=_arr(runs, "FullyClosed")),
      "E5": _check(f"Pearson(RD, ARR) over the FT-all runs <= {cc.pearson_max}",
                   pearson <= cc.pearson_max, pearson=pearson, runs=len(names)),
  }


def _customisation_criterion(config, summary: dict) -> dict:
  """E4: SCARA customises at least as well as SAP-like and nearly as well as Open."""
  table, gap = summary["customisation"], config.criteria.custom_gap
  scara, sap, open_ = (table[k]["accuracy"] for k in ("SCARA", "SAP-like", "Open"))
  return _check(f"acc(SCARA) >= acc(SAP-like) and acc(SCARA) >= acc(Open) - {gap}",
                scara >= sap and scara >= open_ - gap, scara=scara, sap=sap, open=open_)


def criteria(config, summary: dict, num_layers: int) -> dict:
  """Every check the run can make (the recovery ones only when it attacked)."""
  result = {**_rd_criteria(config, summary, num_layers),
            "E6_amplification": _amplification_criterion(summary, num_layers)}
  if "recovery" in summary:
    result.update(_recovery_criteria(config, summary, num_layers))
    result["E4"] = _customisation_criterion(config, summary)
  return result


def plot_rd(summary: dict, path: str) -> None:
  """RD(n) mean +- std per re-init scale, RD_full / (1 + tau) and n*."""
  rd = summary["rd"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (scale, table) in enumerate(rd["tables"].items()):
    mean, std = np.asarray(table["rd_mean"]), np.asarray(table["rd_std"])
    n = np.arange(len(mean))
    ax.errorbar(n, mean, std, color=f"C{i}", marker="o", capsize=3, label=f"RD(n), {scale}")
    ax.axhline(table["rd_full_mean"] / (1 + rd["tolerance"]), color=f"C{i}", ls=":",
               label=f"RD_full/(1+tau), {scale}")
    ax.axvline(table["n_star"], color=f"C{i}", ls="--", alpha=0.5, label=f"n* = "
               f"{table['n_star']}, {scale}")
  plots.label_axes(ax, "n (bottom blocks replaced)", "CE on D_RD (nats/token)",
                   "recovery difficulty RD(n)", legend_fontsize=7)
  plots.save_figure(fig, path)


def plot_transition(summary: dict, path: str) -> None:
  """F1: ARR after FT-all, pre-attack CE and amplification A(l) against the closed block l."""
  runs = summary["recovery"]["ft_all"]
  singles = sorted((int(k[2:]), runs[k]) for k in runs if k.startswith("S_"))
  layers = [layer for layer, _ in singles]
  fig, (ax, ax_amp) = plt.subplots(1, 2, figsize=(11, 4.2))
  ax.plot(layers, [r["arr"] for _, r in singles], "o-", color="C0", label="ARR after FT-all")
  twin = ax.twinx()
  twin.plot(layers, [r["rd"] for _, r in singles], "s--", color="C1", label="pre-attack CE")
  twin.set_ylabel("pre-attack CE on D_RD (nats/token)")
  l_t = summary["criteria"]["E2"]["values"]["transition_layer"]
  if l_t is not None:
    ax.axvline(l_t, color="k", ls=":", label=f"l_t = {l_t}")
  ax.axvline(summary["rd"]["n_star"] - 0.5, color="C3", ls="--",
             label=f"n* = {summary['rd']['n_star']}")
  plots.label_axes(ax, "single closed block l", "ARR", "transition sweep")
  for sigma, d in summary["diagnostics"]["d2"].items():
    ax_amp.plot(range(len(d["amplification"])), d["amplification"], "o-",
                label=f"sigma = {sigma}")
  plots.label_axes(ax_amp, "perturbed block l", "A(l) = deviation at L / after l",
                   "error amplification (D2)")
  plots.save_figure(fig, path)


def plot_rd_vs_arr(summary: dict, path: str) -> None:
  """F2: RD of every FT-all closed set against its ARR, with Pearson r."""
  runs = summary["recovery"]["ft_all"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, r in runs.items():
    ax.scatter(r["rd"], r["arr"], color="C0")
    ax.annotate(name, (r["rd"], r["arr"]), textcoords="offset points", xytext=(4, 4),
                fontsize=7)
  r = summary["criteria"]["E5"]["values"]["pearson"]
  ax.set_title(f"RD vs ARR after FT-all (Pearson r = {r:.2f})")
  ax.set_xlabel("RD of the closed set (CE on D_RD, nats/token)")
  ax.set_ylabel("ARR")
  ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def plot_all(config, summary: dict, num_layers: int, workdir: str) -> None:
  """rd_curve.png, and with the attacks transition.png and rd_vs_arr.png."""
  del config, num_layers
  plot_rd(summary, os.path.join(workdir, "rd_curve.png"))
  if "recovery" in summary:
    plot_transition(summary, os.path.join(workdir, "transition.png"))
    plot_rd_vs_arr(summary, os.path.join(workdir, "rd_vs_arr.png"))


def _rows(header: list[str], rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def format_tables(summary: dict) -> str:
  """T1 (every scale), D1, T2 and T3 as Markdown tables."""
  rd = summary["rd"]
  parts = []
  for scale, t in rd["tables"].items():
    rows = [(n, f"{m:.3f} ± {s:.3f}", f"{x:.3f}") for n, (m, s, x) in
            enumerate(zip(t["rd_mean"], t["rd_std"], t["threshold_lhs"]))]
    parts.append(f"T1 ({scale} re-init): RD_full = {t['rd_full_mean']:.3f}, n* = {t['n_star']}"
                 f" (seed 0 alone: {t['n_star_seed0']}; vs RD(L): {t['n_star_vs_rd_L']})\n"
                 + _rows(["n", "RD(n)", "(1+tau) RD(n)"], rows))
  d1 = summary["diagnostics"]["d1"]
  parts.append("D1: rho_l\n" + _rows(["l", *d1], [
      (layer, *(f"{d1[k][layer]:.3f}" for k in d1)) for layer in range(len(d1["trained"]))]))
  if "recovery" in summary:
    rec = summary["recovery"]
    closed = rec["ft_closed"]
    rows = [(name, f"{r['closed_ratio']:.3f}", f"{r['l_rec']:.3f}", f"{r['rr_loss']:.3f}",
             f"{r['arr']:.3f}", f"{closed[name]['arr']:.3f}" if name in closed else "")
            for name, r in rec["ft_all"].items()]
    parts.append(f"T2 (victim loss {np.mean(rec['victim']['loss']):.3f}, accuracy "
                 f"{np.mean(rec['victim']['accuracy']):.3f})\n" + _rows(
                     ["set", "closed ratio", "L_rec", "RR_loss", "ARR FT-all", "ARR FT-closed"],
                     rows))
    parts.append("T3\n" + _rows(["scheme", "trainable block params", "accuracy"], [
        (k, v["trainable_params"], f"{v['accuracy']:.3f}")
        for k, v in summary["customisation"].items()]))
  verdicts = [(k, "PASS" if v["passed"] else "FAIL", v["rule"])
              for k, v in summary["criteria"].items()]
  parts.append(_rows(["criterion", "verdict", "rule"], verdicts))
  return "\n\n".join(parts)

