"""What the trainer trains: a model, its data, its training loss and its evaluation.

`train_and_evaluate` knows nothing of language models: a `Task` gives it the model (a config and
the function that builds the nnx module from it), the data (a checkpointable training iterator
and fixed evaluation batches), the training loss and the evaluation metrics. The language model
of the `model` and `data` sections is one task (`language_model_task`); a reward model, a CNN on
images, a policy fine-tuned by RL or a model fine-tuned from a checkpoint (`init_params`) are
others, and each gets the trainer's checkpoints, resume, SIGTERM handling, non-finite guard,
metrics and progress.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from bigmodel_jax import losses
from bigmodel_jax.models import create_model, presets
from bigmodel_jax.train import checkpointing, flops
from bigmodel_jax.train.step import make_loss_fn

# (params, batch) -> (loss_sum, weight_sum): the step divides the gradient of the sum by the
# total weight, so gradient accumulation computes the gradient of the whole batch.
LossFn = Callable[[Any, dict], tuple]
# (params, batch) -> {name: sum over the batch, ..., "weight": the batch's weight}; the trainer
# reports sum / weight of every name over all evaluation batches.
MetricsFn = Callable[[Any, dict], dict]


@dataclasses.dataclass
class Data:
  """The data of a run.

  Attributes:
    train_iterator: () -> checkpointable iterator (get_state / set_state) over this process's
      training batches.
    eval_batches: () -> the evaluation batches, the same every time.
    description: what a summary records of the data (e.g. each split's fingerprint and size).
    seq_len: tokens per example of a sequence task (throughput and FLOPs are per token), or
      None (per example).
    tokenizer: the tokenizer of text data (samples in the summary), or None.
    bytes_per_token: UTF-8 bytes per token of the validation split (bits per byte), or None.
  """

  train_iterator: Callable[[], Any]
  eval_batches: Callable[[], list]
  description: dict
  seq_len: int | None = None
  tokenizer: Any = None
  bytes_per_token: float | None = None


@dataclasses.dataclass(frozen=True)
class Task:
  """A model and what it is trained and evaluated on.

  Attributes:
    model_config: the model's configuration (identifies checkpoints; fused steps read it).
    create_model: (model_config, rngs) -> the nnx module, holding only nnx.Param.
    data: the run's data.
    train_loss: graphdef -> `LossFn`, the loss the step minimises; None for a task whose step
      has an objective of its own (an RL step's, which samples its own responses: train/rl_task.py).
    eval_metrics: graphdef -> `MetricsFn`; its "loss" is the run's evaluation loss.
    name: what plots call the model.
    init_params: () -> the initial parameters (a pure dict, e.g. a pre-trained checkpoint's),
      or None: `create_model`'s initialisation with the run's seed.
    flops_per_token: model FLOPs of a training step per token (for MFU), or None.
  """

  model_config: Any
  create_model: Callable[[Any, nnx.Rngs], nnx.Module]
  data: Data
  train_loss: Callable[[nnx.GraphDef], LossFn] | None
  eval_metrics: Callable[[nnx.GraphDef], MetricsFn]
  name: str
  init_params: Callable[[], Any] | None = None
  flops_per_token: float | None = None

  def identity(self, optimizer_name: str) -> dict:
    """What a checkpoint of this task must match to be resumed."""
    return checkpointing.run_identity(self.model_config, optimizer_name)


def mean_train_loss(task: "Task", graphdef: nnx.GraphDef) -> Callable[[Any, dict], Any]:
  """(params, batch) -> the task's training loss per unit of weight (e.g. for Hessian probes).

  Args:
    task: the task.
    graphdef: its model's graph.
  """
  loss_sum = task.train_loss(graphdef)

  def loss(params, batch):
    total, weight = loss_sum(params, batch)
    return total / jnp.maximum(weight, 1.0)

  return loss


def lm_loss(token_loss: Callable = losses.cross_entropy) -> Callable[[nnx.GraphDef], LossFn]:
  """graphdef -> the summed token loss of a batch of {"inputs", "targets", "weights"}.

  Args:
    token_loss: (logits, targets, weights) -> (sum, weight), e.g. `losses.make_token_loss(...)`.
  """
  return lambda graphdef: make_loss_fn(graphdef, token_loss)


def lm_eval_metrics(graphdef: nnx.GraphDef) -> MetricsFn:
  """The cross-entropy of a language-model batch (nats per token), whatever the training loss."""
  loss_fn = lm_loss()(graphdef)

  def metrics(params, batch):
    loss_sum, weight_sum = loss_fn(params, batch)
    return {"loss": loss_sum, "weight": weight_sum}

  return metrics


def config_token_loss(loss: ml_collections.ConfigDict) -> Callable:
  """The training loss of the `loss` section: cross_entropy, or gem with beta and h."""
  options = {} if loss.name in ("cross_entropy", "ce") else {"beta": loss.beta, "h": loss.h}
  try:
    return losses.make_token_loss(loss.name, **options)
  except ValueError as e:
    raise ValueError(f"loss.name: {e}") from e


def language_model_task(model_config, data: Data,
                        loss: ml_collections.ConfigDict | None = None,
                        init_params: Callable[[], Any] | None = None) -> Task:
  """The transformer of `model_config` trained on token data.

  Args:
    model_config: the TransformerConfig.
    data: token batches of {"inputs", "targets", "weights"} with `seq_len`.
    loss: the `loss` config section (cross_entropy or gem); None: cross-entropy.
    init_params: the initial parameters, or None.

  Returns:
    The Task.
  """
  token_loss = config_token_loss(loss) if loss is not None else losses.cross_entropy
  return Task(model_config=model_config, create_model=create_model, data=data,
              train_loss=lm_loss(token_loss), eval_metrics=lm_eval_metrics,
              name=presets.describe(model_config), init_params=init_params,
              flops_per_token=flops.flops_per_token(model_config, data.seq_len))
