"""The step's operations one at a time, JAX against PyTorch: the minimal reproductions behind
experiments/bench_step.py's ratio.

Each case is one operation of the `make pretrain` train step at its real shape, forward and
backward where the step has both, jitted in JAX and run eagerly in PyTorch at the same thread
count; the two alternate over rounds and the figure is the median time ratio JAX / PyTorch. A
ratio near 1 for the matmul and far above 1 for the element-wise and attention cases says that
the step's gap is XLA:CPU's code around the matmuls, not the matmuls.
"""

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.nn import functional as F

from bigmodel_jax.models.attention import causal_attention


def _seconds(fn: Callable[[], object], repeats: int) -> float:
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def _cases(tokens: int, width: int, heads: int, seq_len: int) -> dict:
  """name -> (jax thunk, torch thunk), each computing forward and (if any) backward."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((tokens, width), np.float32)
  w = rng.standard_normal((width, 4 * width), np.float32) * 0.02
  h = rng.standard_normal((tokens, 4 * width), np.float32)
  qkv = rng.standard_normal((3, tokens // seq_len, seq_len, heads, width // heads), np.float32)

  gemm = jax.jit(jnp.dot)
  gelu = jax.jit(jax.value_and_grad(lambda h: jnp.sum(jax.nn.gelu(h, approximate=True))))
  attention = jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(causal_attention(q, k, v))))
  jx, jw, jh, jq = (jnp.asarray(a) for a in (x, w, h, qkv))
  tx, tw = torch.from_numpy(x), torch.from_numpy(w)
  th = torch.from_numpy(h).requires_grad_()
  tq = torch.from_numpy(qkv).transpose(2, 3).contiguous().requires_grad_()  # [3, b, heads, l, d]

  def torch_gelu():
    th.grad = None
    F.gelu(th, approximate="tanh").sum().backward()
    return th.grad

  def torch_attention():
    tq.grad = None
    F.scaled_dot_product_attention(tq[0], tq[1], tq[2], is_causal=True).sum().backward()
    return tq.grad

  return {
      "matmul": (lambda: gemm(jx, jw), lambda: tx @ tw),
      "gelu_tanh_fwd_bwd": (lambda: gelu(jh), torch_gelu),
      "causal_attention_fwd_bwd": (lambda: attention(*jq), torch_attention),
  }


def op_ratios(tokens: int, width: int, heads: int, seq_len: int, rounds: int = 5,
              repeats: int = 20) -> dict:
  """Median JAX / PyTorch time ratio of each case (see the module docstring).

  Args:
    tokens: rows of the activations (batch x context).
    width: the model width (the MLP is 4x as wide).
    heads: attention heads.
    seq_len: the context (attention runs over tokens // seq_len sequences).
    rounds: alternating JAX / PyTorch rounds.
    repeats: calls per timing.

  Returns:
    name -> {"jax_ms", "torch_ms", "ratio"} (medians over rounds).
  """
  result = {}
  for name, (jax_fn, torch_fn) in _cases(tokens, width, heads, seq_len).items():
    jax.block_until_ready(jax_fn())
    torch_fn()
    times = [(_seconds(jax_fn, repeats), _seconds(torch_fn, repeats)) for _ in range(rounds)]
    result[name] = {"jax_ms": 1e3 * statistics.median(t[0] for t in times),
                    "torch_ms": 1e3 * statistics.median(t[1] for t in times),
                    "ratio": statistics.median(t[0] / t[1] for t in times)}
  return result
