"""Token-level losses for language models.

The cross-entropy is returned as a (sum, weight) pair rather than a mean so that gradient
accumulation and multi-batch evaluations divide once, by the total number of tokens, and stay
exactly equal to the loss of the whole batch. GEM (`gem_loss`) follows the same convention, and
`make_token_loss` selects either by name.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Summed next-token cross-entropy in nats.

  Args:
    logits: [..., vocab] unnormalised log-probabilities (any float dtype; computed in float32).
    targets: [...] integer token ids.
    weights: [...] per-token weights, 0 for padding.

  Returns:
    (sum of weighted per-token losses, sum of weights), both float32 scalars.
  """
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets
  )
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_token * weights), jnp.sum(weights)


GEM_H = ("linear", "logsigmoid")


def _gem_per_token(logits: jax.Array, targets: jax.Array, beta: float, h: str) -> jax.Array:
  """-sum_v q_v w_v (log p_y - log p_v) per token; q and w carry no gradient."""
  logits = logits.astype(jnp.float32)
  logit_y = jnp.take_along_axis(logits, targets[..., None], axis=-1)
  diff = logit_y - logits  # log p_y - log p_v: the log-normaliser cancels
  q = jax.lax.stop_gradient(jax.nn.softmax(logits / beta, axis=-1))
  if h == "logsigmoid":
    q = q * jax.lax.stop_gradient(jax.nn.sigmoid(-0.01 * diff))  # w_v = sigmoid(0.01 (z_v - z_y))
  return -jnp.sum(q * diff, axis=-1)


def _check_gem(beta: float, h: str) -> None:
  if h not in GEM_H:
    raise ValueError(f"gem_loss: h must be one of {GEM_H}, got {h!r}")
  if not 0 < beta <= 1:
    raise ValueError(f"gem_loss: beta must be in (0, 1], got {beta}")


def gem_loss(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, beta: float = 0.7,
    h: str = "linear",
) -> tuple[jax.Array, jax.Array]:
  """Summed GEM loss, the entropy-regularised distribution-matching SFT objective.

  Li et al., "Preserving Diversity in Supervised Fine-Tuning of Large Language Models"
  (ICLR 2025), https://arxiv.org/abs/2408.16673. Per token with target y and logits z:

      q = stop_grad(softmax(z / beta))
      w_v = 1 (h="linear")  or  stop_grad(sigmoid(0.01 (z_v - z_y)))  (h="logsigmoid")
      loss = -sum_v q_v w_v (log p_y - log p_v)

  so d loss / d z = q*w - (sum_v q_v w_v) e_y; with h="linear" that is q - e_y, which for
  beta=1 is exactly the cross-entropy gradient (the loss values differ, the gradients do not).
  Its fixed point is softmax(z / beta) = data distribution, i.e. p ∝ p_data^beta: flatter than
  the data for beta < 1. Returned as (sum, weight) like `cross_entropy`; divide to average over
  the unmasked tokens.

  Args:
    logits: [..., vocab] unnormalised log-probabilities (computed in float32).
    labels: [...] integer target ids.
    mask: [...] per-token weights, 0 for tokens that must not contribute (prompt, padding).
    beta: temperature of q, in (0, 1]; the paper's default is 0.7.
    h: "linear" or "logsigmoid" (the authors' scripts use "logsigmoid").

  Returns:
    (sum of weighted per-token losses, sum of weights), both float32 scalars.
  """
  _check_gem(beta, h)
  per_token = _gem_per_token(logits, labels, beta, h)
  weights = mask.astype(jnp.float32)
  # where, not *: a masked token with non-finite logits must contribute exactly nothing.
  return jnp.sum(jnp.where(weights != 0, per_token * weights, 0.0)), jnp.sum(weights)


TOKEN_LOSSES = ("cross_entropy", "gem")


def make_token_loss(name: str, **kwargs) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Selects a token loss by name, e.g. from `config.loss.name`.

  Args:
    name: "cross_entropy" (alias "ce") or "gem".
    **kwargs: the loss's own hyper-parameters (gem: beta, h); cross_entropy takes none.

  Returns:
    loss(logits, targets, weights) -> (sum, weight), like `cross_entropy`.

  Raises:
    ValueError: naming the loss or the keyword it does not accept.
  """
  if name in ("cross_entropy", "ce"):
    if kwargs:
      raise ValueError(f"loss cross_entropy takes no options, got {sorted(kwargs)}")
    return cross_entropy
  if name == "gem":
    unknown = set(kwargs) - {"beta", "h"}
    if unknown:
      raise ValueError(f"loss gem: unknown options {sorted(unknown)}; it takes beta and h")
    _check_gem(kwargs.get("beta", 0.7), kwargs.get("h", "linear"))
    return functools.partial(gem_loss, **kwargs)
  raise ValueError(f"loss name {name!r} is unknown; choose one of {TOKEN_LOSSES}")
