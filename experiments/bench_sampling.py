r"""Decode throughput with a KV cache against recomputing the prefix: `python -m
experiments.bench_sampling --out=bench_sampling.json`.

A small GPT-2 (random weights) decodes `--new_tokens` tokens greedily after a prompt, twice in
the same process: with the KV cache (`models.sampling.generate`: one prefill, then one token per
step) and by recomputing the whole fixed-size prefix buffer at every step
(`greedy_by_recompute`, this benchmark's baseline). Both are jitted and compiled before timing; the
repetitions alternate; the figure is the median of the per-repetition time ratios
recompute / cached (= cached throughput / recompute throughput). The two must produce the same
tokens (greedy), which the JSON records.

Prints and writes one JSON object (to --out).
"""

import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from bigmodel_jax.models import create_model, from_preset
from bigmodel_jax.models.sampling import SamplingOptions, generate
from experiments import cli


def greedy_by_recompute(graphdef: nnx.GraphDef, answer_len: int):
  """The baseline: a jitted greedy decoder (params, prompts int32[b, p]) -> int32[b, answer_len].

  No KV cache: each of the `answer_len` steps runs the model on the fixed-size buffer of
  prompt + answer so far (the answers are a few tokens long).
  """

  @jax.jit
  def decode(params, prompts):
    batch, prompt_len = prompts.shape
    buffer = jnp.concatenate([prompts, jnp.zeros((batch, answer_len), prompts.dtype)], axis=1)

    def step(i, buffer):
      logits = nnx.merge(graphdef, params)(buffer)
      position = prompt_len - 1 + i
      token = jnp.argmax(logits[:, position], axis=-1).astype(buffer.dtype)
      return buffer.at[:, position + 1].set(token)

    buffer = jax.lax.fori_loop(0, answer_len, step, buffer)
    return buffer[:, prompt_len:]

  return decode


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def run(*, new_tokens: int, prompt_len: int, batch: int, layers: int, width: int,
        repeats: int) -> dict:
  """Times cached and recomputing greedy decoding; returns the JSON record."""
  config = from_preset(
      "gpt2", vocab_size=257, num_layers=layers, num_heads=width // 32,
      num_kv_heads=width // 32, head_dim=32, embed_dim=width, mlp_dim=4 * width,
      max_seq_len=prompt_len + new_tokens, tie_embeddings=True)
  graphdef, params = nnx.split(create_model(config, nnx.Rngs(0)))
  params = nnx.to_pure_dict(params)
  prompts = jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, 256)
  options = SamplingOptions(max_new_tokens=new_tokens)
  cached = jax.jit(lambda p, x: generate(graphdef, p, x, jax.random.key(0), options, True).tokens)
  recompute = greedy_by_recompute(graphdef, new_tokens)
  same = bool(np.array_equal(cached(params, prompts), recompute(params, prompts)))
  times = {"cached": [], "recompute": []}
  for _ in range(repeats):
    times["cached"].append(_timed(cached, params, prompts))
    times["recompute"].append(_timed(recompute, params, prompts))
  ratios = [r / c for c, r in zip(times["cached"], times["recompute"])]
  tokens = batch * new_tokens
  return {
      "speedup_cached_over_recompute": statistics.median(ratios),
      "cached_tokens_per_s": tokens / statistics.median(times["cached"]),
      "recompute_tokens_per_s": tokens / statistics.median(times["recompute"]),
      "same_greedy_tokens": same,
      "ratios": ratios, "times_s": times, "num_params": config.num_params(),
      "new_tokens": new_tokens, "prompt_len": prompt_len, "batch": batch, "layers": layers,
      "width": width, "machine": platform.processor() or platform.machine(),
      "backend": jax.default_backend(),
  }


def main(argv):
  del argv
  f = flags.FLAGS
  result = run(new_tokens=f.new_tokens, prompt_len=f.prompt_len, batch=f.batch, layers=f.layers,
               width=f.width, repeats=f.repeats)
  print(json.dumps(result, indent=2))
  if f.out:
    with open(f.out, "w") as out:
      json.dump(result, out, indent=2)


if __name__ == "__main__":
  # Flags are defined only when this file runs as a program, so that tests can import `run`.
  flags.DEFINE_integer("new_tokens", 128, "Tokens decoded per prompt.")
  flags.DEFINE_integer("prompt_len", 16, "Prompt length.")
  flags.DEFINE_integer("batch", 8, "Prompts decoded together.")
  flags.DEFINE_integer("layers", 4, "Transformer blocks.")
  flags.DEFINE_integer("width", 128, "Embedding width (head_dim 32).")
  flags.DEFINE_integer("repeats", 5, "Interleaved timed repetitions.")
  flags.DEFINE_string("out", None, "Where to write the JSON result.")
  cli.run(main)
