"""The fused LOMO / AdaLomo training step: each layer is updated as soon as its gradient exists.

Lv et al., "Full Parameter Fine-tuning for Large Language Models with Limited Resources" (2023)
and "AdaLomo" (2023). One step, for this project's stacked-layer models:

  forward   embed -> lax.scan over the stacked blocks, saving each block's input -> head, loss;
  backward  the head's VJP, then update the head (final norm, untied lm_head); a reverse lax.scan
            over the layers that, for layer i, recomputes the block's VJP from its saved input
            (jax.vjp of `Block` on that layer's parameter slice), updates the slice at once
            (dynamic_update_slice into the donated stacked parameters and optimizer state) and
            carries only the activation cotangent; finally the embedding's VJP and update.

So at most one layer's gradient is alive (plus, with tied embeddings, the embedding's gradient
from the head, which must wait for the input side). Global-norm clipping uses LOMO's two passes:
a first backward that only accumulates the squared gradient norm, then the real one with the
clipping factor folded into the loss cotangent (the forward activations serve both).

The optimizer is any optax transformation whose state is per-parameter trees mirroring the
parameters plus gradient-independent scalars (counts, schedules): `lomo`, `adalomo` (built with
`layer_axes=stacked_layers`), `sgd` without momentum... It is called on each layer's slice, so a
transform that needs the whole gradient (`clip_by_global_norm`, `apply_if_finite`, `MultiSteps`)
cannot be fused; clipping is the `max_grad_norm` argument instead. The result equals
`optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer)` applied unfused.

A fused step cannot skip a non-finite step (the layers are updated before the loss's finiteness
is known for the whole model): its metric `finite` reports it, the trainer never checkpoints the
state that follows (train/nonfinite.py) and stops after `train.max_consecutive_nonfinite` of them.
`fused_step` is the trainer's step builder: `train_and_evaluate(config, workdir, fused_step)`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from bigmodel_jax import losses
from bigmodel_jax.models import TransformerConfig
from bigmodel_jax.models.block import Block
from bigmodel_jax.sharding import abstract_model
from bigmodel_jax.train import memory
from bigmodel_jax.train.state import TrainState
from bigmodel_jax.train.step import StepBuilder
from bigmodel_jax.train.task import config_token_loss

LAYERS = "layers"
LATE = ("embed", "pos_embed")  # updated after the layers: the input side of their gradient


def _block_graphdef(config: TransformerConfig) -> nnx.GraphDef:
  with nnx.use_eager_sharding(False):
    block = nnx.eval_shape(lambda: Block(config, rngs=nnx.Rngs(0)))
  return nnx.split(block, nnx.Param)[0]


def _squared_change(new, old) -> jax.Array:
  """Squared norm of new - old (the update applied to one group of parameters), in float32."""
  return _sum_squares(jax.tree.map(lambda a, b: a.astype(jnp.float32) - b.astype(jnp.float32),
                                   new, old))


def _sum_squares(tree) -> jax.Array:
  # optax.tree.norm squares in the leaves' dtype (bfloat16 gradients would sum in bfloat16) and
  # gives an int32 0 for an empty tree: the leaves are cast first, the result is float32.
  return optax.tree.norm(optax.tree.cast(tree, jnp.float32), squared=True).astype(jnp.float32)


class _MirroredState:
  """The optimizer state split into parameter-mirroring trees and its other (scalar) leaves."""

  def __init__(self, opt_state, params):
    leaves, self.treedef = _flatten(opt_state, params)
    self.is_mirror = [_same_structure(x, params) for x in leaves]
    self.mirrors = [x for x, m in zip(leaves, self.is_mirror) if m]
    self.others = [x for x, m in zip(leaves, self.is_mirror) if not m]

  def build(self, mirrors: list, others: list | None = None):
    """The state with these mirror trees (of any sub-tree of the parameters) and other leaves."""
    mirrors, others = iter(mirrors), iter(self.others if others is None else others)
    return self.treedef.unflatten([next(mirrors) if m else next(others) for m in self.is_mirror])

  def split(self, state, sub_params) -> tuple[list, list]:
    """(mirror trees, other leaves) of a state whose mirrors have the structure of sub_params."""
    leaves, _ = _flatten(state, sub_params)
    return ([x for x, m in zip(leaves, self.is_mirror) if m],
            [x for x, m in zip(leaves, self.is_mirror) if not m])


def _same_structure(x, params) -> bool:
  return jax.tree.structure(x) == jax.tree.structure(params)


def _flatten(state, params):
  return jax.tree.flatten(state, is_leaf=lambda x: _same_structure(x, params))


def _subset(tree: dict, keys) -> dict:
  return {k: tree[k] for k in keys}


def _update_group(optimizer, mirrored: _MirroredState, mirrors: list, grads, params):
  """Applies `optimizer` to a sub-tree; returns (new params, new mirrors, new other leaves)."""
  updates, new_state = optimizer.update(grads, mirrored.build(mirrors), params)
  new_mirrors, others = mirrored.split(new_state, params)
  return optax.apply_updates(params, updates), new_mirrors, others


def make_fused_train_step(model_config: TransformerConfig, optimizer: optax.GradientTransformation,
                          schedule: optax.Schedule, max_grad_norm: float = 0.0,
                          token_loss: Callable = losses.cross_entropy) -> Callable:
  """The fused layer-by-layer training step.

  Args:
    model_config: the model's configuration (stacked layers).
    optimizer: the optax transformation, without global-norm clipping (see module docstring).
    schedule: the learning-rate schedule, only for logging.
    max_grad_norm: global-norm clipping by the two-pass method; 0 disables it (one pass).
    token_loss: (logits, targets, weights) -> (sum, weight), e.g. from
      `losses.make_token_loss`.

  Returns:
    train_step(state, batch) -> (new_state, metrics), with the TrainState of the unfused step
    (`optimizer.init(params)`); metrics loss, grad_norm (before clipping), update_norm,
    param_norm, lr, finite,
    tokens. Jit it with the state donated.
  """
  graphdef, _ = abstract_model(model_config)
  block_graphdef = _block_graphdef(model_config)

  def embed(params, tokens, positions):
    return nnx.merge(graphdef, params)._embed_tokens(tokens, positions)

  def head_loss(params, x, batch):
    model = nnx.merge(graphdef, params)
    logits = model._logits(model.final_norm(x))
    return token_loss(logits, batch["targets"], batch["weights"])[0]

  def block(layer_params, x, positions):
    return nnx.merge(block_graphdef, layer_params)(x, positions)

  def forward(params, tokens, positions):
    def body(x, layer_params):
      return block(layer_params, x, positions), x

    x0 = embed(params, tokens, positions)
    return jax.lax.scan(body, x0, params[LAYERS])

  def backward(params, xs, x_last, batch, positions, seed, update, mirrored):
    """One backward pass, updating as it goes iff `update`.

    Returns (loss_sum, params, mirrors, squared gradient norm, squared update norm, other
    optimizer-state leaves).
    """
    mirrors = mirrored.mirrors
    keys = list(params)
    early = [k for k in keys if k != LAYERS and k not in LATE]
    late = [k for k in keys if k in LATE]
    trainable = lambda p: {**params, **p}

    head = _subset(params, early + (["embed"] if model_config.tie_embeddings else []))
    loss, head_vjp = jax.vjp(lambda p, x: head_loss(trainable(p), x, batch), head, x_last)
    head_grads, dx = head_vjp(seed)
    tied = {k: head_grads.pop(k) for k in late if k in head_grads}
    sq = _sum_squares(head_grads)
    usq = jnp.zeros((), jnp.float32)
    new_params, new_mirrors, others = dict(params), [dict(m) for m in mirrors], None
    if update and early:
      p, m, others = _update_group(optimizer, mirrored, [_subset(x, early) for x in mirrors],
                                   head_grads, _subset(params, early))
      usq = usq + _squared_change(p, _subset(params, early))
      new_params.update(p)
      for full, sub in zip(new_mirrors, m):
        full.update(sub)

    layer_state = ([x[LAYERS] for x in mirrors], params[LAYERS])

    def layer_step(carry, inputs):
      (layer_mirrors, layers), dx, sq, usq = carry
      i, x_in = inputs
      take = lambda t: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, False),
                                    t)
      p_i = take(layers)
      _, vjp = jax.vjp(lambda p, x: block(p, x, positions), p_i, x_in)
      g_i, dx = vjp(dx)
      sq = sq + _sum_squares(g_i)
      if update:
        new_p, new_m, _ = _update_group(optimizer, mirrored, take(layer_mirrors), g_i, p_i)
        usq = usq + _squared_change(new_p, p_i)
        put = lambda t, s: jax.tree.map(
            lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b.astype(a.dtype), i, 0), t, s)
        layers, layer_mirrors = put(layers, new_p), put(layer_mirrors, new_m)
      return ((layer_mirrors, layers), dx, sq, usq), None

    steps = (jnp.arange(xs.shape[0]), xs)
    ((layer_mirrors, layers), dx, sq, usq), _ = jax.lax.scan(
        layer_step, (layer_state, dx, sq, usq), steps, reverse=True)
    new_params[LAYERS] = layers
    for full, sub in zip(new_mirrors, layer_mirrors):
      full[LAYERS] = sub

    embeds = _subset(params, late)
    _, embed_vjp = jax.vjp(lambda p: embed(trainable(p), batch["inputs"], positions),
                           embeds)
    (embed_grads,) = embed_vjp(dx)
    embed_grads = {k: jax.tree.map(jnp.add, g, tied[k]) if k in tied else g
                   for k, g in embed_grads.items()}
    sq = sq + _sum_squares(embed_grads)
    if update and late:
      p, m, others = _update_group(optimizer, mirrored, [_subset(x, late) for x in mirrors],
                                   embed_grads, embeds)
      usq = usq + _squared_change(p, embeds)
      new_params.update(p)
      for full, sub in zip(new_mirrors, m):
        full.update(sub)
    return loss, new_params, new_mirrors, sq, usq, others

  def train_step(state: TrainState, batch: dict):
    params = state.params
    tokens = batch["inputs"]
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    weight_sum = jnp.sum(batch["weights"].astype(jnp.float32))
    x_last, xs = forward(params, tokens, positions)
    mirrored = _MirroredState(state.opt_state, params)
    seed = 1.0 / weight_sum
    if max_grad_norm and max_grad_norm > 0:
      _, _, _, sq, _, _ = backward(params, xs, x_last, batch, positions, seed, False, mirrored)
      grad_norm = jnp.sqrt(sq)
      seed = seed * jnp.where(grad_norm < max_grad_norm, 1.0, max_grad_norm / grad_norm)
    loss_sum, new_params, new_mirrors, sq, usq, others = backward(
        params, xs, x_last, batch, positions, seed, True, mirrored)
    if not (max_grad_norm and max_grad_norm > 0):
      grad_norm = jnp.sqrt(sq)
    opt_state = mirrored.build(new_mirrors, others)
    metrics = {"loss": loss_sum / weight_sum, "grad_norm": grad_norm,
               "finite": jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm),
               "update_norm": jnp.sqrt(usq),
               "param_norm": optax.tree.norm(new_params), "lr": schedule(state.step),
               "tokens": weight_sum}
    return TrainState(state.step + 1, new_params, opt_state), metrics

  return train_step


def fused_step_peak_bytes(model_config: TransformerConfig, optimizer, schedule, mesh: Mesh,
                          rules, *, global_batch_size: int, seq_len: int,
                          max_grad_norm: float = 0.0) -> int:
  """Peak bytes per device of the jitted fused step, from XLA's memory analysis (compile only).

  Same accounting as `memory.compiled_peak_bytes`: arguments + outputs - aliased (donated)
  + temporaries.

  Args:
    model_config: the model configuration.
    optimizer: the optax transformation (no clipping).
    schedule: the learning-rate schedule.
    mesh: the device mesh.
    rules: logical-to-mesh axis rules.
    global_batch_size: sequences per step.
    seq_len: tokens per sequence.
    max_grad_norm: two-pass clipping threshold; 0 for one pass.

  Returns:
    The peak device memory in bytes.
  """
  return memory.compiled_peak_bytes(
      lambda _: make_fused_train_step(model_config, optimizer, schedule, max_grad_norm),
      model_config, optimizer, mesh, rules, global_batch_size=global_batch_size,
      seq_len=seq_len)


def fused_step(max_grad_norm: float = 0.0) -> StepBuilder:
  """The trainer's step builder for the fused step (see `train.loop.unfused_step`).

  The run's optimizer (`opt`) must be built with `opt.max_grad_norm = 0`: a fused step cannot run
  optax's global-norm clipping; `max_grad_norm` here is LOMO's two-pass clipping instead. The
  task must be a language model's (`task.language_model_task`): the step walks its layers.

  Args:
    max_grad_norm: global-norm clipping by the two-pass method; 0 disables it.

  Returns:
    The StepBuilder; its step raises ValueError naming train.grad_accum_steps or
    opt.max_grad_norm when the config asks for what a fused step cannot do.
  """

  def build(graphdef, task, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
            config):
    del graphdef  # the fused step splits the model itself
    if config.train.grad_accum_steps != 1:
      raise ValueError(f"train.grad_accum_steps ({config.train.grad_accum_steps}) must be 1 "
                       "with the fused step (it updates each layer during the backward pass)")
    if config.opt.max_grad_norm:
      raise ValueError(f"opt.max_grad_norm ({config.opt.max_grad_norm}) must be 0 with the "
                       "fused step, which clips by its own two passes")
    return make_fused_train_step(task.model_config, optimizer, schedule, max_grad_norm,
                                 config_token_loss(config.loss))

  return StepBuilder(build, whole_gradient=False)
