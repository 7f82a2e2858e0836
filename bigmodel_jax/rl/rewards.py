"""Reward functions: callables over token arrays, and the arithmetic task's verifiable reward.

A reward function maps (prompts int32[n, p], responses int32[n, t], mask bool[n, t]) to
float32[n], one scalar per response, and is written in jnp so that it vectorises over the batch
and runs inside the jitted RL step. `mask` marks the response tokens up to and including EOS.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

RewardFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

_ZERO = ord("0")
_NEWLINE = ord("\n")


def _read_number(tokens: jax.Array) -> jax.Array:
  """int32[n] value of the decimal digits (byte tokens) along the last axis."""
  digits = tokens.astype(jnp.int32) - _ZERO
  powers = 10 ** jnp.arange(tokens.shape[-1] - 1, -1, -1, dtype=jnp.int32)
  return (digits * powers).sum(axis=-1)


def arithmetic_targets(prompts: jax.Array, digits: int) -> jax.Array:
  """int32[n, digits + 2]: the answer of each prompt "ab+cd=" as bytes, then a newline.

  Args:
    prompts: int32[n, 2 * digits + 3] byte tokens: a start token, "a", "+", "b", "=" with
      zero-padded operands of `digits` digits each (`data.arithmetic.encode_prompts`).
    digits: digits per operand.

  Returns:
    The bytes of the zero-padded sum (digits + 1 of them) and "\\n".
  """
  if prompts.shape[-1] != 2 * digits + 3:
    raise ValueError(f"arithmetic prompts with digits={digits} have {2 * digits + 3} tokens, "
                     f"got {prompts.shape[-1]}")
  total = _read_number(prompts[:, 1:1 + digits]) + _read_number(prompts[:, 2 + digits:-1])
  powers = 10 ** jnp.arange(digits, -1, -1, dtype=jnp.int32)
  answer = (total[:, None] // powers) % 10 + _ZERO
  newline = jnp.full((prompts.shape[0], 1), _NEWLINE, jnp.int32)
  return jnp.concatenate([answer, newline], axis=1)


def arithmetic_reward(digits: int) -> RewardFn:
  """The fraction of the answer's characters (digits + 1, then "\\n") that are right, in [0, 1].

  Position i of the response is right if it is unmasked and equals the i-th target byte, so a
  response scores 1 iff it is exactly the zero-padded sum followed by the newline that ends it.
  Partial credit per digit gives a denser signal than exact match.

  Args:
    digits: digits per operand of the task.

  Returns:
    A reward function (prompts, responses, mask) -> float32[n].
  """

  def reward(prompts: jax.Array, responses: jax.Array, mask: jax.Array) -> jax.Array:
    targets = arithmetic_targets(prompts, digits)
    width = targets.shape[1]
    if responses.shape[1] < width:
      raise ValueError(f"responses need >= {width} tokens (sampling max_new_tokens) for "
                       f"digits={digits}, got {responses.shape[1]}")
    right = (responses[:, :width] == targets) & mask[:, :width]
    return right.mean(axis=1, dtype=jnp.float32)

  return reward
