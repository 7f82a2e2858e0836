"""A fixed, seeded sample of validation rows spread over the whole split.

Evaluating the first rows of a split measures whichever documents happen to come first; a
seeded sample of rows from all of it measures the split. The rows are packed exactly as in
training (`make_lm_dataset`, documents in the split's stored order, each ending with EOS), then
`num_batches * global_batch_size` of them are drawn without replacement. The sample depends on
`seed` only, not on the training seed, so runs with different training seeds are evaluated on
the same rows.
"""

import logging

import numpy as np

from bigmodel_jax.data.pipeline import check_process_share, make_lm_dataset

# Rows are drawn from at most this many times the sample size (the first rows of the split:
# TFDS stores examples in a hashed, i.e. shuffled, order), so that a huge validation split
# (c4) is not tokenized whole at start.
POOL_FACTOR = 64


def _pack_rows(source, tokenizer, seq_len: int, max_rows: int) -> dict[str, np.ndarray]:
  """Packs the split (in order, one pass) into at most `max_rows` rows of training layout."""
  rows = make_lm_dataset(source=source, tokenizer=tokenizer, split="validation", seq_len=seq_len,
                         global_batch_size=1, seed=0, num_epochs=1, num_batches=max_rows)
  rows = list(rows)
  return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}


def sample_eval_batches(
    *,
    source,
    tokenizer,
    seq_len: int,
    global_batch_size: int,
    num_batches: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
  """Draws this process's share of a seeded sample of validation rows, as batches.

  Args:
    source: A random-access source of {"text": str} (see `load_source`).
    tokenizer: A tokenizer (see `make_tokenizer`).
    seq_len: Tokens per row of inputs/targets.
    global_batch_size: Rows per global batch, summed over processes.
    num_batches: Batches in the sample. If the split has fewer rows, all of them are used
      (the last batch padded with rows of weight 0).
    seed: Which rows are drawn.
    process_index: This process's index.
    process_count: Number of processes sharing each global batch.

  Returns:
    Batches {"inputs", "targets", "weights"} of global_batch_size // process_count rows each,
    rows [process_index * b, (process_index + 1) * b) of each global batch, as
    `make_lm_dataset` gives them.
  """
  check_process_share(global_batch_size, process_index, process_count)
  num_rows = num_batches * global_batch_size
  pool = _pack_rows(source, tokenizer, seq_len, POOL_FACTOR * num_rows)
  pool_size = len(pool["inputs"])
  if pool_size == POOL_FACTOR * num_rows:
    logging.warning("the validation split has more than %d rows: the evaluation sample is drawn "
                    "from its first %d", pool_size, pool_size)
  chosen = np.sort(np.random.default_rng(seed).permutation(pool_size)[:num_rows])
  sample = {key: value[chosen] for key, value in pool.items()}
  padding = -len(chosen) % global_batch_size
  sample = {key: np.concatenate([value, np.zeros((padding, *value.shape[1:]), value.dtype)])
            for key, value in sample.items()}
  local = global_batch_size // process_count
  starts = range(0, len(sample["inputs"]), global_batch_size)
  return [{key: value[start + process_index * local:start + (process_index + 1) * local]
           for key, value in sample.items()} for start in starts]
