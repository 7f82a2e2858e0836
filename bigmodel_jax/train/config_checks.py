"""The domain of every config value with one, checked before a run does any work.

`check_config(config)` looks up each key of RULES that the config has (experiments share the
`train`, `opt`, `data` and `model` sections but not every key of them) and raises one ConfigError
naming every key whose value is outside its domain, e.g. "train.checkpoint_every must be an
integer >= 1, got 0". It also checks the relations between keys: `data.seq_len <=
model.max_seq_len` (a model is never run past the length it was built for) and `opt.warmup_steps`
(or `train.warmup_steps`) below `train.steps`. Experiments call it first, before anything is
written to their workdir.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from bigmodel_jax.models.config import MLPS, NORMS, POSITIONS
from bigmodel_jax.models.presets import PRESETS
from bigmodel_jax.train.errors import ConfigError


def _number(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(low: int) -> tuple[str, Callable[[Any], bool]]:
  return f"an integer >= {low}", lambda v: isinstance(v, int) and not isinstance(v, bool) and (
      v >= low)


def _interval(low: float, high: float, closed_low: bool, closed_high: bool
              ) -> tuple[str, Callable[[Any], bool]]:
  text = f"in {'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
  return text, lambda v: _number(v) and (v >= low if closed_low else v > low) and (
      v <= high if closed_high else v < high)


POSITIVE = ("> 0", lambda v: _number(v) and v > 0)
BOOL = ("a bool", lambda v: isinstance(v, bool))
NON_NEGATIVE = (">= 0", lambda v: _number(v) and v >= 0)
FRACTION = _interval(0, 1, True, True)  # [0, 1]
DECAY = _interval(0, 1, True, False)  # [0, 1)

RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{f"train.{k}": _integer(1) for k in (
        "steps", "global_batch_size", "batch_size", "grad_accum_steps", "log_every",
        "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
        "hessian_lanczos_steps")},
    **{f"train.{k}": _integer(0) for k in ("max_consecutive_nonfinite", "hessian_every",
                                           "warmup_steps")},
    "train.lr": POSITIVE,
    "train.weight_decay": NON_NEGATIVE,
    "opt.lr": POSITIVE,
    "opt.warmup_steps": _integer(0),
    "opt.min_lr_ratio": FRACTION,
    "opt.b1": DECAY,
    "opt.b2": DECAY,
    "opt.eps": POSITIVE,
    "opt.weight_decay": NON_NEGATIVE,
    "opt.momentum": DECAY,
    "opt.max_grad_norm": NON_NEGATIVE,
    "opt.fraction": _interval(0, 1, False, True),  # (0, 1]
    "opt.l2sp": NON_NEGATIVE,
    "opt.clip_grad_value": NON_NEGATIVE,
    "opt.adalomo_decay_rate": POSITIVE,
    "opt.adalomo_clip_threshold": POSITIVE,
    "opt.adalomo_param_scale_eps": POSITIVE,
    "data.seq_len": _integer(1),
    "data.shuffle_window": _integer(0),
    "data.tokenizer_vocab_size": _integer(1),
    "data.validation_fraction": _interval(0, 1, False, False),  # (0, 1)
    **{f"model.{k}": _integer(1) for k in (
        "num_layers", "num_heads", "num_kv_heads", "head_dim", "embed_dim", "mlp_dim",
        "max_seq_len")},
    "model.vocab_size": _integer(0),
    "model.norm_eps": POSITIVE,
    "model.architecture": (f"a preset, one of {tuple(PRESETS)}", lambda v: v in PRESETS),
    "model.norm": (f"one of {NORMS}", lambda v: v in NORMS),
    "model.mlp": (f"one of {MLPS}", lambda v: v in MLPS),
    "model.positions": (f"one of {POSITIONS}", lambda v: v in POSITIONS),
    "model.use_bias": BOOL,
    "model.qk_norm": BOOL,
    "model.attn_logit_softcap": POSITIVE,
    "model.final_logit_softcap": POSITIVE,
}


def _lookup(config: ml_collections.ConfigDict, key: str):
  """(True, value) when `config` has the dotted `key`, else (False, None)."""
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False, None
    node = node[part]
  return True, node


def domain_errors(config: ml_collections.ConfigDict) -> list[str]:
  """One line per key of RULES that `config` has and whose value is outside its domain.

  Args:
    config: an experiment config.

  Returns:
    The problems, e.g. ["opt.lr must be > 0, got -0.001"]; None values (unset placeholders) pass.
  """
  problems = []
  for key, (requirement, valid) in RULES.items():
    present, value = _lookup(config, key)
    if present and value is not None and not valid(value):
      problems.append(f"{key} must be {requirement}, got {value!r}")
  return problems


def relation_errors(config: ml_collections.ConfigDict, data_feeds_model: bool = True
                    ) -> list[str]:
  """The problems between keys: sequence length vs model length, warmup vs steps.

  Args:
    config: an experiment config.
    data_feeds_model: whether the model runs at `data.seq_len` and is built from the `model`
      section (False: a model from a checkpoint, or an experiment with its own task lengths).

  Returns:
    One line per problem.
  """
  problems = []
  values = {k: _lookup(config, k) for k in (
      "data.seq_len", "model.max_seq_len", "train.steps", "opt.warmup_steps", "opt.schedule",
      "train.warmup_steps")}
  (has_len, seq_len), (has_max, max_len) = values["data.seq_len"], values["model.max_seq_len"]
  if data_feeds_model and has_len and has_max and seq_len > max_len:
    problems.append(f"data.seq_len ({seq_len}) must be <= model.max_seq_len ({max_len}); raise "
                    "model.max_seq_len or lower data.seq_len")
  has_steps, steps = values["train.steps"]
  cosine = values["opt.schedule"][1] == "cosine"
  for key in ("opt.warmup_steps", "train.warmup_steps"):
    present, warmup = values[key]
    if (present and has_steps and _number(warmup) and _number(steps) and warmup >= steps
        and (cosine or key.startswith("train."))):
      problems.append(f"{key} ({warmup}) must be smaller than train.steps ({steps})")
  return problems


def check_config(config: ml_collections.ConfigDict, data_feeds_model: bool = True) -> None:
  """Raises one ConfigError naming every key of `config` outside its domain.

  Args:
    config: an experiment config.
    data_feeds_model: see `relation_errors`.

  Raises:
    ConfigError: listing every problem, each with its key.
  """
  problems = domain_errors(config) + relation_errors(config, data_feeds_model)
  if problems:
    raise ConfigError("invalid config: " + "; ".join(problems))


def section_errors(config: ml_collections.ConfigDict, reads: Sequence[str]) -> list[str]:
  """The top-level keys of `config` that the program does not read, and those it misses.

  Args:
    config: an experiment config.
    reads: the top-level keys the experiment reads.

  Returns:
    One message per unread or missing key (empty: the config is the experiment's).
  """
  have, want = set(config.keys()), set(reads)
  problems = [f"config key {key!r} is read by no code of this experiment (it reads "
              f"{', '.join(sorted(want))}); remove it from the config file" for key in
              sorted(have - want)]
  problems += [f"the config has no {key!r}, which this experiment reads" for key in
               sorted(want - have)]
  return problems


def check_sections(config: ml_collections.ConfigDict, reads: Sequence[str]) -> None:
  """Raises a ConfigError when `config` holds a top-level key that the experiment never reads,
  or lacks one it reads, so no setting is silently ignored.

  Args:
    config: an experiment config.
    reads: the top-level keys the experiment reads.

  Raises:
    ConfigError: naming every such key.
  """
  if problems := section_errors(config, reads):
    raise ConfigError("config does not fit the experiment: " + "; ".join(problems))
