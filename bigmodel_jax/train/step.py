"""The functional train and eval steps.

`make_train_step` returns a pure function (state, batch) -> (state, metrics) that the loop jits
with explicit in/out shardings and a donated state. Gradient accumulation splits the global batch
into micro-batches with `lax.scan` and divides the summed gradient once by the total token count,
so an accumulated step computes exactly the gradient of the whole batch.

A step whose loss or gradient norm is not finite is skipped: it returns the parameters and the
optimizer state bitwise unchanged (so the optimizer's own count and schedule do not advance
either), `state.step` still advances (it counts the batches consumed, which the data iterator,
the checkpoints and the logged `lr` follow), and the metric `finite` is False. The loop counts
those steps (train/nonfinite.py). This is optax.apply_if_finite's rule, applied to the whole state
so that no -0.0 + 0.0 or NaN arithmetic touches the kept values.

The optimizer receives optax's extra arguments (`GradientTransformationExtraArgs`): `value` (the
mean loss of the batch), `grad` (its gradient) and `value_fn` (params -> the mean loss of this
batch; `obj_fn` is the same function under optax.contrib.sophia's name), so loss-aware
transforms (`hessian.hessian_monitor`, `optax.contrib.reduce_on_plateau`, `optax.polyak_sgd`,
`optax.contrib.sophia`) run from a config; transforms that take no extra arguments ignore them.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax import losses
from bigmodel_jax.train.state import TrainState

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepBuilder:
  """How `train_and_evaluate` builds a run's step.

  Attributes:
    build: (graphdef, task, optimizer, schedule, config) -> train_step(state, batch) ->
      (state, metrics with at least loss, finite, update_norm and param_norm).
    whole_gradient: whether the optimizer sees the whole gradient and optax's extra arguments
      in one update (False for a step that updates layer by layer, the fused LOMO step);
      loss-aware transforms such as `train.hessian_every`'s monitor need it.
  """

  build: Callable[..., Callable]
  whole_gradient: bool = True


def make_loss_fn(graphdef: nnx.GraphDef, token_loss: Callable = losses.cross_entropy
                 ) -> Callable:
  """The summed token loss of a batch as a function of the parameters.

  Args:
    graphdef: the model's static graph from `nnx.split`.
    token_loss: (logits, targets, weights) -> (sum, weight), e.g. `losses.make_token_loss(...)`.

  Returns:
    loss_fn(params, batch) -> (loss_sum, weight_sum).
  """

  def loss_fn(params, batch: Batch):
    model = nnx.merge(graphdef, params)
    logits = model(batch["inputs"])
    return token_loss(logits, batch["targets"], batch["weights"])

  return loss_fn


def make_mean_loss_fn(loss_fn: Callable, batch: Batch) -> Callable:
  """params -> the mean token loss of `batch` (the `value_fn` of optax's extra arguments).

  Args:
    loss_fn: loss_fn(params, batch) -> (loss_sum, weight_sum), from `make_loss_fn`.
    batch: the batch the function is fixed to.

  Returns:
    value_fn(params) -> scalar.
  """

  def mean_loss(params):
    loss_sum, weight_sum = loss_fn(params, batch)
    return loss_sum / weight_sum

  return mean_loss


def _split_micro_batches(batch: Batch, num_micro: int) -> Batch:
  def split(x):
    if x.shape[0] % num_micro:
      raise ValueError(
          f"train.grad_accum_steps ({num_micro}) must divide the batch size ({x.shape[0]})")
    return x.reshape(num_micro, x.shape[0] // num_micro, *x.shape[1:])

  return jax.tree.map(split, batch)


def summed_loss_and_grads(loss_fn: Callable, params, batch: Batch, grad_accum_steps: int):
  """Summed loss, summed weights and summed gradient, over `grad_accum_steps` micro-batches.

  Args:
    loss_fn: loss_fn(params, batch) -> (loss_sum, weight_sum).
    params: the parameters.
    batch: the global batch.
    grad_accum_steps: number of sequential micro-batches.

  Returns:
    (loss_sum, weight_sum, grads of loss_sum).
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (loss_sum, weight_sum), grads = value_and_grad(params, batch)
    return loss_sum, weight_sum, grads

  def accumulate(carry, micro_batch):
    (loss_sum, weight_sum), grads = value_and_grad(params, micro_batch)
    return jax.tree.map(jnp.add, carry, (loss_sum, weight_sum, grads)), None

  zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
  totals, _ = jax.lax.scan(accumulate, zeros, _split_micro_batches(batch, grad_accum_steps))
  return totals


def keep_if_finite(finite: jax.Array, new, old):
  """`new` if `finite`, else `old`, leaf by leaf (a skipped step leaves the state bitwise as it
  was; see the module docstring).

  Args:
    finite: bool scalar, whether the step's loss and gradient were finite.
    new: the updated pytree (e.g. (params, opt_state)).
    old: the pytree before the step, of the same structure.

  Returns:
    The pytree to keep.
  """
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int = 1,
                    token_loss: Callable = losses.cross_entropy,
                    loss_fn: Callable | None = None) -> Callable:
  """The training step.

  Args:
    graphdef: the model's static graph.
    optimizer: the optax transformation (clipping included).
    schedule: the learning-rate schedule, only for logging.
    grad_accum_steps: micro-batches per optimizer step.
    token_loss: the training loss of a language model (default cross-entropy;
      `losses.gem_loss` for GEM).
    loss_fn: (params, batch) -> (loss_sum, weight_sum) of any model (a `Task`'s train loss);
      None: `make_loss_fn(graphdef, token_loss)`.

  Returns:
    train_step(state, batch) -> (new_state, metrics) with metrics loss (per unit of weight),
    grad_norm, update_norm, param_norm, lr, tokens and finite (False: the update was skipped).
  """
  loss_fn = loss_fn or make_loss_fn(graphdef, token_loss)
  optimizer = optax.with_extra_args_support(optimizer)

  def train_step(state: TrainState, batch: Batch):
    loss_sum, weight_sum, grads = summed_loss_and_grads(
        loss_fn, state.params, batch, grad_accum_steps)
    grads = jax.tree.map(lambda g: g / weight_sum, grads)
    loss = loss_sum / weight_sum
    mean_loss = make_mean_loss_fn(loss_fn, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, value=loss,
                                          grad=grads, value_fn=mean_loss, obj_fn=mean_loss)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state = keep_if_finite(finite, (params, opt_state),
                                       (state.params, state.opt_state))
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "update_norm": optax.tree.norm(updates),
        "param_norm": optax.tree.norm(params),
        "lr": schedule(state.step),
        "tokens": weight_sum,
        "finite": finite,
    }
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
  """The evaluation step.

  Args:
    graphdef: the model's static graph.

  Returns:
    eval_step(params, batch) -> (cross-entropy sum, weight_sum) for accumulation over batches;
    evaluation is always the cross-entropy (nats/token), whatever the training loss.
  """
  return make_loss_fn(graphdef)
