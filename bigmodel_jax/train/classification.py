"""Classification as a trainer task: a model of logits trained by cross-entropy on labelled arrays.

`classification_task` makes a `Task` (train/task.py) of any classifier (the digits CNN and MLP
of the block-Hessian experiments): the training data are `data.array_batches.ShuffledBatches` of
the train split, the evaluation batches cover the evaluation split once, and the evaluation
reports the cross-entropy and the accuracy. `split_metrics` evaluates a model on other splits
too (e.g. as the trainer's `final_metrics`).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bigmodel_jax.data.array_batches import ShuffledBatches, padded_batches
from bigmodel_jax.train.task import Data, LossFn, MetricsFn, Task

Split = tuple[np.ndarray, np.ndarray]  # (inputs [n, ...], integer labels [n])


def labelled(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
  """A split as the rows of its batches: {"inputs", "targets", "weights" (all 1)}."""
  return {"inputs": inputs, "targets": targets, "weights": np.ones(len(targets), np.float32)}


def classification_metrics(graphdef: nnx.GraphDef) -> MetricsFn:
  """(params, batch) -> {"loss": summed cross-entropy, "accuracy": correct count, "weight"}."""

  def metrics(params, batch):
    logits = nnx.merge(graphdef, params)(batch["inputs"]).astype(jnp.float32)
    weights = batch["weights"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    return {"loss": jnp.sum(loss * weights), "accuracy": jnp.sum(correct * weights),
            "weight": jnp.sum(weights)}

  return metrics


def classification_loss(graphdef: nnx.GraphDef) -> LossFn:
  """(params, batch) -> (summed cross-entropy, summed weight): the training loss."""
  metrics = classification_metrics(graphdef)

  def loss(params, batch):
    out = metrics(params, batch)
    return out["loss"], out["weight"]

  return loss


def split_metrics(graphdef: nnx.GraphDef, params, splits: dict[str, Split], batch_size: int
                  ) -> dict[str, float]:
  """{"<split>_loss", "<split>_accuracy"} of `params` on each split (every example once).

  Args:
    graphdef: the model's graph.
    params: its parameters.
    splits: {name: (inputs, labels)}.
    batch_size: examples per evaluation batch.

  Returns:
    The mean cross-entropy and accuracy of each split.
  """
  metrics = jax.jit(classification_metrics(graphdef))
  out = {}
  for name, (inputs, targets) in splits.items():
    totals = [jax.device_get(metrics(params, b))
              for b in padded_batches(labelled(inputs, targets), batch_size)]
    weight = sum(float(t["weight"]) for t in totals)
    for key in ("loss", "accuracy"):
      out[f"{name}_{key}"] = sum(float(t[key]) for t in totals) / weight
  return out


def classification_task(model_config: Any, create_model: Callable[[Any, nnx.Rngs], nnx.Module],
                        train: Split, evaluation: Split, batch_size: int, seed: int, name: str
                        ) -> Task:
  """A classifier trained by cross-entropy on shuffled minibatches of `train`.

  Args:
    model_config: the model's dataclass config (identifies checkpoints).
    create_model: (model_config, rngs) -> the module, mapping inputs to logits.
    train: the training split.
    evaluation: the split of the trainer's evaluations (loss and accuracy).
    batch_size: the global batch size (training and evaluation batches).
    seed: seed of the training order.
    name: what plots call the model.

  Returns:
    The Task.
  """
  eval_batches = padded_batches(labelled(*evaluation), batch_size)
  data = Data(train_iterator=lambda: ShuffledBatches(labelled(*train), batch_size, seed),
              eval_batches=lambda: eval_batches,
              description={"train": {"examples": len(train[1])},
                           "evaluation": {"examples": len(evaluation[1])}})
  return Task(model_config=model_config, create_model=create_model, data=data,
              train_loss=classification_loss, eval_metrics=classification_metrics, name=name)
