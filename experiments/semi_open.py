r"""Semi-open models: SCARA's recovery difficulty, recovery attacks and customisation.

  python -m experiments.semi_open --config=configs/semi_open.py --workdir=/tmp/scara

victim: a byte-level GPT-2 pre-trained on D_pre by the trainer (`train_and_evaluate`, the
  `train` and `opt` sections) in workdir/victim, then loaded from that run's final checkpoint (or
  reused: init_from = an earlier workdir; a rerun keeps a finished victim).
rd: RD(n), n = 0..L, and RD_full for every initialisation seed and re-init scale; SCARA's n*
  (mean over seeds, and seed 0 alone, the code's single draw) (T1).
diagnostics: D1 (residual ratio of trained vs random blocks) and D2 (error amplification).
recovery: FT-all from the victim with every closed set of the spec (C0, single blocks S_l, bottom
  B_k, top T_k, SCARA, SAP-like, fully closed) and FT-closed on SCARA and top-n*: ARR, RR_loss,
  closed ratio (T2), the transition sweep (F1), RD vs ARR with Pearson r (F2).
customisation: the public blocks fine-tuned on generated arithmetic, exact-match accuracy (T3).
With init_from=hf:DIR only rd and diagnostics run, on the imported model and its tokenizer.
Outputs in the workdir: config.json, metrics.jsonl, summary.json (tables, criteria A2/A5 and
the phenomena E1-E6 with their numbers), victim/ (the victim's trainer run: checkpoints,
metrics.jsonl, summary.json, loss.png), rd_curve.png, transition.png, rd_vs_arr.png.

Reference: Huang et al., "Archilles' Heel in Semi-open LLMs: Hiding Bottom against Recovery
Attacks" (arXiv 2410.11182); spec: shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md, part A.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from bigmodel_jax.data import ByteTokenizer, arithmetic, make_tokenizer
from bigmodel_jax.data.tokenizers import HF_PREFIX
from bigmodel_jax.models.sampling import make_greedy_decoder
from bigmodel_jax.semi_open import corpus, propagation, recovery
from bigmodel_jax.semi_open.customisation import arithmetic_batches, customise
from bigmodel_jax.semi_open.freezing import trainable_mask
from bigmodel_jax.semi_open.recovery_difficulty import (
  make_full_loss,
  make_masked_loss,
  rd_curve,
)
from bigmodel_jax.semi_open.replacement import fresh_params, layer_mask, replace_layers
from bigmodel_jax.train import builders, outputs
from bigmodel_jax.train.derived_config import derive
from bigmodel_jax.train.loop import train_and_evaluate
from bigmodel_jax.train.metrics import MetricWriter
from bigmodel_jax.train.pretrained import load_pretrained
from bigmodel_jax.train.task import Data, language_model_task
from experiments import cli
from experiments import semi_open_report as report

VICTIM_DIR = "victim"
# The sections only this experiment reads; the victim's trainer run gets the config without them.
OWN_SECTIONS = ("init_from", "data", "rd", "diagnostics", "recovery", "customisation", "criteria")


@dataclasses.dataclass
class Victim:
  """The defender's model and the data the phases share."""

  model_config: object
  graphdef: nnx.GraphDef
  params: dict
  tokenizer: object
  segments: list  # D_pre, D_atk, D_eval token streams

  @property
  def num_layers(self) -> int:
    return self.model_config.num_layers


def _stacked(batches: dict) -> dict:
  return {k: jnp.asarray(v) for k, v in batches.items()}


def victim_data(config: ml_collections.ConfigDict, segments: list, tokenizer) -> Data:
  """The victim's pre-training data: train.steps batches of windows of D_pre (spec A.7.2);
  its evaluation: train.eval_batches batches of windows of D_eval."""
  t, seq_len = config.train, config.data.seq_len
  train = corpus.lm_batches(segments[0], t.steps, t.global_batch_size, seq_len, config.seed)
  held_out = corpus.lm_batches(segments[2], t.eval_batches, t.global_batch_size, seq_len,
                               config.seed + 3)
  eval_batches = list(corpus.StackedBatches(held_out))
  return Data(train_iterator=lambda: corpus.StackedBatches(train),
              eval_batches=lambda: eval_batches,
              description={"D_pre_tokens": len(segments[0]), "D_eval_tokens": len(segments[2])},
              seq_len=seq_len, tokenizer=tokenizer)


def pretrain(config: ml_collections.ConfigDict, segments: list, tokenizer, workdir: str
             ) -> dict:
  """Trains the victim from its initialisation on D_pre through the trainer, in workdir/victim
  (checkpoints and resume; a rerun keeps a finished victim); returns its provenance."""
  model_config = builders.model_config(config.model, tokenizer.vocab_size)
  task = language_model_task(model_config, victim_data(config, segments, tokenizer))
  run = derive(config, drop=OWN_SECTIONS)
  summary = train_and_evaluate(run, os.path.join(workdir, VICTIM_DIR), task=task)
  return {"source": "pre-trained here", "steps": summary["steps"],
          "seconds": summary["wall_time_s"],
          "seconds_per_step": summary["wall_time_s"] / summary["steps"],
          "final_eval_loss": summary["final_eval_loss"]}


def build_victim(config: ml_collections.ConfigDict, workdir: str) -> tuple[Victim, dict]:
  """The victim (pre-trained here, reloaded from an earlier workdir, or imported) and its
  provenance."""
  is_hf = config.init_from.startswith(HF_PREFIX)
  tokenizer = make_tokenizer(config.init_from) if is_hf else ByteTokenizer()
  tokens = corpus.corpus_tokens(tokenizer, config.data.data_dir, config.data.max_bytes)
  segments = corpus.split_stream(tokens, tuple(config.data.fractions))
  if is_hf:
    source, info = config.init_from, {"source": config.init_from}
  elif config.init_from:
    source, info = os.path.join(config.init_from, VICTIM_DIR), {"source": config.init_from}
  else:
    source, info = os.path.join(workdir, VICTIM_DIR), pretrain(config, segments, tokenizer,
                                                               workdir)
  mesh, rules = builders.mesh_and_rules(config)
  model_config, graphdef, params, _ = load_pretrained(source, config.model, mesh, rules)
  victim = Victim(model_config, graphdef, jax.device_get(params), tokenizer, segments)
  info.update(num_params=model_config.num_params(), segment_tokens=[len(s) for s in segments])
  return victim, info


def rd_batches(config: ml_collections.ConfigDict, victim: Victim) -> dict:
  """D_RD: data.rd_rows fixed windows of D_atk in batches of data.rd_batch (spec A.7.1)."""
  d = config.data
  if d.rd_batch <= 0 or d.rd_rows % d.rd_batch:
    raise ValueError(f"data.rd_batch ({d.rd_batch}) must divide data.rd_rows ({d.rd_rows})")
  return _stacked(corpus.lm_batches(victim.segments[1], d.rd_rows // d.rd_batch, d.rd_batch,
                                    d.seq_len, config.seed + 1))


def rd_section(config: ml_collections.ConfigDict, victim: Victim, batches: dict,
               writer: MetricWriter) -> dict:
  """T1 for every re-init scale: RD(n) mean and std over seeds, RD_full, n*."""
  rc, num_layers = config.rd, victim.num_layers
  victim_ce = float(make_full_loss(victim.graphdef)(victim.params, batches))
  tables = {}
  for scale in (rc.reinit_scale, *rc.other_scales):
    draws = [fresh_params(victim.model_config, s, scale) for s in rc.seeds]
    curve = rd_curve(victim.graphdef, victim.params, draws, batches, num_layers)
    tables[scale] = report.rd_table(curve, rc.tolerance)
    for n in range(num_layers + 1):
      writer.write(n, {"phase": "rd", "reinit_scale": scale, "n": n,
                       "rd": curve["rd"][:, n].tolist()})
  primary = tables[rc.reinit_scale]
  return {"victim_ce": victim_ce, "tolerance": rc.tolerance,
          "epsilon": rc.tolerance / (1 + rc.tolerance), "reinit_scale": rc.reinit_scale,
          "n_star": primary["n_star"], "tables": tables}


def diagnostics(config: ml_collections.ConfigDict, victim: Victim, batches: dict) -> dict:
  """D1 (residual ratios, trained vs random blocks of every scale) and D2 (amplification)."""
  dc, rc = config.diagnostics, config.rd
  tokens = batches["inputs"].reshape(-1, batches["inputs"].shape[-1])[:dc.rows]
  targets = batches["targets"].reshape(-1, batches["targets"].shape[-1])[:dc.rows]
  block_def = propagation.block_graphdef(victim.model_config)
  stream, _ = jax.jit(propagation.hidden_states, static_argnums=(0, 1))(
      victim.graphdef, block_def, victim.params, tokens)
  ratios = jax.jit(propagation.residual_ratios, static_argnums=0)
  d1 = {"trained": np.asarray(ratios(block_def, victim.params["layers"], stream, tokens))}
  for scale in (rc.reinit_scale, *rc.other_scales):
    fresh = fresh_params(victim.model_config, rc.seeds[0], scale)
    d1[f"random_{scale}"] = np.asarray(ratios(block_def, fresh["layers"], stream, tokens))
  amplify = propagation.make_amplification(victim.graphdef, block_def)
  d2 = {}
  for sigma in dc.sigmas:
    runs = [[amplify(victim.params, jnp.int32(layer), sigma, jax.random.key(seed), tokens,
                     targets)[1:] for seed in range(dc.noise_seeds)]
            for layer in range(victim.num_layers)]
    values = np.asarray(jax.device_get(runs), np.float64)  # [L, seeds, 2]
    d2[f"{sigma:g}"] = {"amplification": values[..., 0].mean(1).tolist(),
                        "delta_ce": values[..., 1].mean(1).tolist()}
  return {"d1": {k: v.tolist() for k, v in d1.items()}, "d2": d2}


def closed_sets(config: ml_collections.ConfigDict, num_layers: int, n_star: int) -> dict:
  """The FT-all closed sets of spec A.7.4 (names -> sorted block indices)."""
  rc = config.recovery
  sets = {"C0": ()}
  sets.update({f"S_{layer}": (layer,) for layer in rc.single_layers})
  sets.update({f"B_{k}": tuple(range(k)) for k in rc.bottom_ks})
  sets.update({f"T_{k}": tuple(range(num_layers - k, num_layers)) for k in (*rc.top_ks, n_star)})
  sets["SCARA"] = tuple(range(n_star))
  sets["SAP-like"] = tuple(range(rc.sap_public, num_layers))
  for name, blocks in sets.items():
    if any(not 0 <= b < num_layers for b in blocks):
      raise ValueError(f"recovery: the closed set {name} = {blocks} lies outside the model's "
                       f"{num_layers} blocks (recovery.single_layers / bottom_ks / top_ks / "
                       "sap_public)")
  return sets


class Attack:
  """What every recovery run shares: the trainer, the batches, the attacker's draw, the RD."""

  def __init__(self, config: ml_collections.ConfigDict, victim: Victim, rd_data: dict):
    rc, d = config.recovery, config.data
    self.config, self.victim = config, victim
    self.trainer = recovery.MaskedTrainer(victim.graphdef, rc.opt, rc.steps, victim.params)
    self.batches = _stacked(corpus.lm_batches(victim.segments[1], rc.steps, rc.batch_size,
                                              d.seq_len, rc.attacker_seed))
    self.bench = jnp.asarray(corpus.benchmarks(victim.segments[2], d.eval_chunks, d.eval_rows,
                                               d.seq_len, config.seed + 2))
    self.evaluate = recovery.make_chunk_eval(victim.graphdef)
    self.fresh = fresh_params(victim.model_config, rc.attacker_seed, config.rd.reinit_scale)
    self.rd_draws = [fresh_params(victim.model_config, s, config.rd.reinit_scale)
                     for s in config.rd.seeds]
    self.rd_data, self.masked_loss = rd_data, make_masked_loss(victim.graphdef)
    loss, accuracy = (np.asarray(v, np.float64) for v in self.evaluate(victim.params, self.bench))
    self.victim_scores = {"loss": loss, "accuracy": accuracy}
    self.random_loss = float(np.mean(self.evaluate(self.fresh, self.bench)[0]))

  def rd_of(self, closed: jax.Array) -> float:
    """The mean over RD seeds of the loss on D_RD with `closed` replaced (pre-attack CE)."""
    return float(np.mean([self.masked_loss(self.victim.params, f, closed, self.rd_data)
                          for f in self.rd_draws]))

  def run(self, name: str, blocks: tuple, mode: str) -> dict:
    """One attack: FT-all or FT-closed on the closed blocks, or "from_scratch" (all random)."""
    num_layers = self.victim.num_layers
    closed = layer_mask(num_layers, blocks)
    if mode == "from_scratch":
      start, rd = self.fresh, float(make_full_loss(self.victim.graphdef)(self.fresh,
                                                                           self.rd_data))
    else:
      start, rd = replace_layers(self.victim.params, self.fresh, closed), self.rd_of(closed)
    train = closed if mode == "ft_closed" else jnp.ones((num_layers,), bool)
    mask = trainable_mask(self.victim.params, train, mode != "ft_closed")
    result = recovery.recover(self.trainer, self.evaluate, start, mask, self.batches,
                              self.config.recovery.eval_every, self.bench)
    ratio = 1.0 if mode == "from_scratch" else recovery.closed_ratio(closed)
    return {"name": name, "mode": mode, "closed": list(blocks), "closed_ratio": ratio,
            "rd": rd, "best_step": result["best_step"], "curve": result["curve"],
            **recovery.resilience(result, self.victim_scores, self.random_loss)}


def recovery_section(config: ml_collections.ConfigDict, attack: Attack, n_star: int,
                     writer: MetricWriter) -> dict:
  """T2: every FT-all set (runs shared between equal sets), fully closed and FT-closed."""
  by_blocks, runs = {}, {}
  for name, blocks in closed_sets(config, attack.victim.num_layers, n_star).items():
    if blocks not in by_blocks:
      by_blocks[blocks] = attack.run(name, blocks, "ft_all")
      writer.write(0, {"phase": "recovery", **by_blocks[blocks]})
    runs[name] = {**by_blocks[blocks], "name": name}
  runs["FullyClosed"] = attack.run("FullyClosed", (), "from_scratch")
  writer.write(0, {"phase": "recovery", **runs["FullyClosed"]})
  closed_runs = {}
  if config.recovery.ft_closed:
    for name in ("SCARA", f"T_{n_star}"):
      closed_runs[name] = attack.run(name, tuple(runs[name]["closed"]), "ft_closed")
      writer.write(0, {"phase": "recovery", **closed_runs[name]})
  return {"victim": {k: v.tolist() for k, v in attack.victim_scores.items()},
          "random_loss": attack.random_loss, "ft_all": runs, "ft_closed": closed_runs}


def customisation_section(config: ml_collections.ConfigDict, victim: Victim, n_star: int,
                          writer: MetricWriter) -> dict:
  """T3: exact-match accuracy after fine-tuning the public blocks of every scheme."""
  cc, num_layers = config.customisation, victim.num_layers
  sources = {split: arithmetic.ArithmeticSource(split=split, digits=cc.digits,
                                                seed=cc.split_seed,
                                                reverse_answer=cc.reverse_answer)
             for split in arithmetic.SPLITS}
  batches = _stacked(arithmetic_batches(sources["train"], cc.steps, cc.batch_size, cc.seq_len,
                                        config.seed))
  trainer = recovery.MaskedTrainer(victim.graphdef, cc.opt, cc.steps, victim.params)
  decode = make_greedy_decoder(victim.graphdef, cc.digits + 1)
  schemes = {"Open": range(num_layers), "SCARA": range(n_star, num_layers),
             "SAP-like": range(config.recovery.sap_public),
             f"Top-hide-{n_star}": range(num_layers - n_star)}
  per_layer = sum(x.size // x.shape[0] for x in jax.tree.leaves(victim.params["layers"]))
  table = {"victim (no fine-tuning)": {"trainable_params": 0, "accuracy": (
      arithmetic.exact_match_accuracy(decode, victim.params, sources["validation"],
                                      ByteTokenizer(), cc.accuracy_problems))}}
  for name, public in schemes.items():
    mask = trainable_mask(victim.params, layer_mask(num_layers, public), False)
    result = customise(trainer, victim.params, mask, batches, decode, sources["validation"],
                       cc.accuracy_problems)
    table[name] = {"public_blocks": list(public), "trainable_params": per_layer * len(public),
                   **result}
    writer.write(0, {"phase": "customisation", "scheme": name, **table[name]})
  return table


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Every phase; writes the outputs and returns the summary."""
  start = time.time()
  outputs.write_config(config, workdir)
  writer = MetricWriter(workdir)
  victim, info = build_victim(config, workdir)
  if "final_eval_loss" in info:
    writer.write(info["steps"], {"phase": "pretrain", "eval_loss": info["final_eval_loss"]})
  rd_data = rd_batches(config, victim)
  summary = {"victim": info, "rd": rd_section(config, victim, rd_data, writer),
             "diagnostics": diagnostics(config, victim, rd_data)}
  n_star = summary["rd"]["n_star"]
  if not config.init_from.startswith(HF_PREFIX):
    attack = Attack(config, victim, rd_data)
    summary["recovery"] = recovery_section(config, attack, n_star, writer)
    summary["customisation"] = customisation_section(config, victim, n_star, writer)
  writer.close()
  summary["criteria"] = report.criteria(config, summary, victim.num_layers)
  summary["wall_time_s"] = time.time() - start
  outputs.write_summary(summary, workdir)
  report.plot_all(config, summary, victim.num_layers, workdir)
  return summary


# The config's top-level keys (experiments/cli.py refuses any other).
# `train` and `opt`: the victim's pre-training (a trainer run); `data`: the semi-open corpus.
READS = ("seed", "model", "mesh", "sharding_rules", "train", "opt", *OWN_SECTIONS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(report.format_tables(summary))
  print(json.dumps({k: v["passed"] for k, v in summary["criteria"].items()}))


if __name__ == "__main__":
  cli.define_config_and_workdir("configs/semi_open.py[:small]", "Where the outputs go.")
  cli.run(main, data_feeds_model=False, reads=READS)
