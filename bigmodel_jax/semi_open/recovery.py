"""Recovery attacks on a semi-open model, through the project's train step, and their metrics.

Huang et al., arXiv 2410.11182, §5.1 and Semi-openRecovery/SFT-Llama2.py: the attacker fills the
closed blocks with the architecture's fresh initialisation and fine-tunes on its recovery set,
either every parameter (FT-all) or only the closed blocks (FT-closed); the best validation
checkpoint is kept. Resilience is the recovery ratio RR_b = Perf_b(recovered) / Perf_b(victim)
averaged over benchmarks (ARR, Eq. (1)); lower is more resilient.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax.semi_open.freezing import freeze_updates, trainable_mask, with_mask
from bigmodel_jax.semi_open.replacement import LAYERS_KEY
from bigmodel_jax.train.optimizers import make_optimizer
from bigmodel_jax.train.state import TrainState
from bigmodel_jax.train.step import make_train_step


class MaskedTrainer:
  """`make_train_step` scanned over a stack of batches, freezing what a mask in the state says.

  One compilation serves every run of one optimizer config and batch shape: the runs differ only
  in their initial parameters and trainable mask (`freezing.with_mask`).

  Args:
    graphdef: the model's graph.
    opt: the `opt` config section (`train.optimizers.make_optimizer`).
    total_steps: steps of a run (for the schedule).
    params: parameters of the model's structure (for the mask's structure).
  """

  def __init__(self, graphdef: nnx.GraphDef, opt: ml_collections.ConfigDict, total_steps: int,
               params: dict):
    base, schedule = make_optimizer(opt, total_steps)
    num_layers = jax.tree.leaves(params[LAYERS_KEY])[0].shape[0]
    self.optimizer = optax.chain(
        base, freeze_updates(trainable_mask(params, jnp.ones((num_layers,), bool), True)))
    step = make_train_step(graphdef, self.optimizer, schedule)
    self._scan = jax.jit(lambda state, batches: jax.lax.scan(step, state, batches))

  def init(self, params: dict, mask: dict) -> TrainState:
    """A fresh TrainState at `params` that trains only the True entries of `mask`."""
    params = jax.tree.map(jnp.copy, params)
    return TrainState(jnp.zeros((), jnp.int32), params,
                      with_mask(self.optimizer.init(params), mask))

  def train(self, state: TrainState, batches: dict) -> tuple[TrainState, dict]:
    """Runs one step per leading slice of `batches`; returns the state and per-step metrics."""
    return self._scan(state, batches)


def make_chunk_eval(graphdef: nnx.GraphDef) -> Callable:
  """Per-benchmark next-token cross-entropy and top-1 accuracy.

  Returns:
    A jitted eval(params, tokens int32[chunks, rows, length + 1]) -> (float32[chunks] mean CE,
    float32[chunks] accuracy), each over every position of a chunk's rows.
  """

  @jax.jit
  def evaluate(params, tokens):
    def chunk(rows):
      # Merged inside: NNX modules cannot cross into the lax.map trace.
      logits = nnx.merge(graphdef, params)(rows[:, :-1])
      targets = rows[:, 1:]
      logp = jax.nn.log_softmax(logits)
      ce = -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))
      return ce, jnp.mean(jnp.argmax(logits, -1) == targets)

    return jax.lax.map(chunk, tokens)

  return evaluate


def recover(trainer: MaskedTrainer, evaluate: Callable, params: dict, mask: dict,
            batches: dict, eval_every: int, eval_tokens: jax.Array) -> dict:
  """Fine-tunes from `params` and keeps the evaluation with the lowest mean loss.

  Args:
    trainer: the compiled trainer (its batch shape and schedule fixed).
    evaluate: `make_chunk_eval(graphdef)`.
    params: the attacker's starting parameters (closed blocks re-initialised).
    mask: the trainable mask.
    batches: the recovery set's batches, a leading steps axis (the same for every run).
    eval_every: evaluate after every this many steps (must divide the steps).
    eval_tokens: the benchmarks, int32[chunks, rows, length + 1].

  Returns:
    {"loss": float64[chunks], "accuracy": float64[chunks], "best_step", "curve": [(step,
    mean loss)], "final_train_loss"} of the best evaluation.
  """
  steps = jax.tree.leaves(batches)[0].shape[0]
  if eval_every <= 0 or steps % eval_every:
    raise ValueError(f"recovery.eval_every ({eval_every}) must divide recovery.steps ({steps})")
  state = trainer.init(params, mask)
  best, curve, train_loss = None, [], float("nan")
  for start in range(0, steps, eval_every):
    chunk = jax.tree.map(lambda x: x[start:start + eval_every], batches)  # noqa: B023
    state, metrics = trainer.train(state, chunk)
    loss, accuracy = (np.asarray(v, np.float64) for v in evaluate(state.params, eval_tokens))
    train_loss = float(metrics["loss"][-1])
    curve.append((start + eval_every, float(loss.mean())))
    if best is None or loss.mean() < best["loss"].mean():
      best = {"loss": loss, "accuracy": accuracy, "best_step": start + eval_every}
  return {**best, "curve": curve, "final_train_loss": train_loss}


def resilience(recovered: dict, victim: dict, random_loss: float) -> dict:
  """Recovery ratios of one run (Eq. (1) of the paper, on our benchmarks).

  Args:
    recovered: {"loss", "accuracy"} per benchmark after the attack.
    victim: {"loss", "accuracy"} per benchmark of the victim.
    random_loss: the loss of a random model (L_rand).

  Returns:
    {"arr": mean accuracy ratio, "rr_acc": per benchmark, "l_rec": mean loss, "rr_loss":
    (L_rand - L_rec) / (L_rand - L_orig)}.
  """
  rr_acc = recovered["accuracy"] / victim["accuracy"]
  l_rec, l_orig = float(recovered["loss"].mean()), float(victim["loss"].mean())
  return {"arr": float(rr_acc.mean()), "rr_acc": rr_acc.tolist(), "l_rec": l_rec,
          "rr_loss": (random_loss - l_rec) / (random_loss - l_orig)}


def closed_ratio(closed: jax.Array) -> float:
  """Closed decoder-block parameters / all decoder-block parameters (blocks are equal in size).

  Args:
    closed: bool[L], the closed blocks.

  Returns:
    |closed| / L.
  """
  return float(np.mean(np.asarray(closed)))
