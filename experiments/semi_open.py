r"""Semi-open models: SCARA's recovery difficulty, recovery attacks and customisation.

  python -m experiments.semi_open --config=configs/semi_open.py --workdir=/tmp/scara

victim: a byte-level GPT-2 pre-trained on D_pre (or reused: init_from = an earlier workdir).
rd: RD(n), n = 0..L, and RD_full for every initialisation seed and re-init scale; SCARA's n*
  (mean over seeds, and seed 0 alone, the code's single draw) (T1).
diagnostics: D1 (residual ratio of trained vs random blocks) and D2 (error amplification).
recovery: FT-all from the victim with every closed set of the spec (C0, single blocks S_l, bottom
  B_k, top T_k, SCARA, SAP-like, fully closed) and FT-closed on SCARA and top-n*: ARR, RR_loss,
  closed ratio (T2), the transition sweep (F1), RD vs ARR with Pearson r (F2).
customisation: the public blocks fine-tuned on generated arithmetic, exact-match accuracy (T3).
With init_from=hf:DIR only rd and diagnostics run, on the imported model and its tokenizer.
Outputs in the workdir: config.json, metrics.jsonl, summary.json (tables, criteria A2/A5 and
the phenomena E1-E6 with their numbers), victim/ (parameters), rd_curve.png, transition.png,
rd_vs_arr.png.

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
from flax import nnx, serialization

from bigmodel_jax import hf
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
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train import builders, outputs
from bigmodel_jax.train.metrics import MetricWriter
from experiments import cli
from experiments import semi_open_report as report

VICTIM_DIR = "victim"


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


def _divides(every: int, steps: int, key: str) -> None:
  if every <= 0 or steps % every:
    raise ValueError(f"{key} ({every}) must divide the steps ({steps})")


def pretrain(config: ml_collections.ConfigDict, victim: Victim, writer: MetricWriter) -> dict:
  """Trains the victim from its initialisation on D_pre (spec A.7.2); returns the timing."""
  pc = config.pretrain
  _divides(pc.log_every, pc.steps, "pretrain.log_every")
  trainer = recovery.MaskedTrainer(victim.graphdef, pc.opt, pc.steps, victim.params)
  batches = _stacked(corpus.lm_batches(victim.segments[0], pc.steps, pc.batch_size,
                                       config.data.seq_len, config.seed))
  everything = trainable_mask(victim.params, jnp.ones((victim.num_layers,), bool), True)
  state = trainer.init(victim.params, everything)
  start = time.time()
  for step in range(0, pc.steps, pc.log_every):
    chunk = jax.tree.map(lambda x: x[step:step + pc.log_every], batches)  # noqa: B023
    state, metrics = trainer.train(state, chunk)
    writer.write(step + pc.log_every, {"phase": "pretrain", "loss": metrics["loss"][-1]})
  victim.params = jax.device_get(state.params)
  return {"steps": pc.steps, "seconds": time.time() - start,
          "seconds_per_step": (time.time() - start) / pc.steps}


def save_victim(victim: Victim, workdir: str) -> None:
  """victim/params.msgpack and victim/model.json, reusable with init_from=workdir."""
  directory = os.path.join(workdir, VICTIM_DIR)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "params.msgpack"), "wb") as f:
    f.write(serialization.msgpack_serialize(jax.device_get(victim.params)))
  outputs.write_json(os.path.join(directory, "model.json"),
                     dataclasses.asdict(victim.model_config))


def load_victim(directory: str) -> tuple:
  """The model config, graph and parameters saved by `save_victim` in DIR/victim."""
  path = os.path.join(directory, VICTIM_DIR)
  if not os.path.isfile(os.path.join(path, "params.msgpack")):
    raise ValueError(f"init_from={directory!r} holds no {VICTIM_DIR}/params.msgpack of an "
                     "earlier experiments.semi_open run")
  with open(os.path.join(path, "model.json")) as f:
    model_config = builders.model_config(ml_collections.ConfigDict(json.load(f)), None)
  with open(os.path.join(path, "params.msgpack"), "rb") as f:
    params = serialization.msgpack_restore(f.read())
  graphdef, _ = abstract_model(model_config)
  return model_config, graphdef, jax.tree.map(jnp.asarray, params)


def load_hf(config: ml_collections.ConfigDict) -> tuple:
  """The model config, graph, host parameters and tokenizer of init_from = "hf:DIR"."""
  directory = config.init_from.removeprefix(HF_PREFIX)
  mesh, rules = builders.mesh_and_rules(config)
  model_config, graphdef, params = hf.import_checkpoint(
      directory, mesh, rules, **builders.numerics(config.model))
  return model_config, graphdef, jax.device_get(params), make_tokenizer(config.init_from)


def build_victim(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter
                 ) -> tuple[Victim, dict]:
  """The victim (pre-trained here, reloaded, or imported) and its provenance."""
  tokenizer = ByteTokenizer()
  if config.init_from.startswith(HF_PREFIX):
    model_config, graphdef, params, tokenizer = load_hf(config)
    info = {"source": config.init_from}
  elif config.init_from:
    model_config, graphdef, params = load_victim(config.init_from)
    info = {"source": config.init_from}
  else:
    model_config = builders.model_config(config.model, tokenizer.vocab_size)
    graphdef, _ = abstract_model(model_config)
    params = fresh_params(model_config, config.seed)
    info = None
  tokens = corpus.corpus_tokens(tokenizer, config.data.data_dir, config.data.max_bytes)
  victim = Victim(model_config, graphdef, params, tokenizer,
                  corpus.split_stream(tokens, tuple(config.data.fractions)))
  if info is None:
    info = {"source": "pre-trained here", **pretrain(config, victim, writer)}
  if not config.init_from.startswith(HF_PREFIX):
    save_victim(victim, workdir)
  info.update(num_params=model_config.num_params(),
              segment_tokens=[len(s) for s in victim.segments])
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
  victim, info = build_victim(config, workdir, writer)
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
READS = ("seed", "model", "data", "mesh", "sharding_rules", "init_from", "pretrain", "rd",
         "recovery", "customisation", "diagnostics", "criteria")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
  print(report.format_tables(summary))
  print(json.dumps({k: v["passed"] for k, v in summary["criteria"].items()}))


if __name__ == "__main__":
  cli.define_config_and_workdir("configs/semi_open.py[:small]", "Where the outputs go.")
  cli.run(main, data_feeds_model=False, reads=READS)
