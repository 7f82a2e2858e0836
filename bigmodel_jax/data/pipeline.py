"""The language-model input pipeline on grain: documents -> tokens -> packed rows -> batches.

source -> (train: shuffle, reshuffled every epoch) -> repeat -> tokenize + EOS
  -> concat-then-split packing into rows of seq_len + 1 tokens -> (train: window shuffle of rows)
  -> inputs = row[:-1], targets = row[1:], weights -> global batch -> this process's rows.

With `completion_only_loss`, records are {"prompt": str, "completion": str} (supervised
fine-tuning data) and only the completion's tokens and the EOS after it are predicted with weight
1: a loss mask is packed alongside the tokens, and a target weighs 0 where it is a prompt token.
Prompt and completion are tokenized separately, as supervised fine-tuning libraries do (TRL's
prompt/completion datasets), so the mask falls exactly on a token boundary.

With `pack_documents=False`, every document is a row of its own instead: EOS (as the document
start that packing gives every document but the first), the document, its EOS, then padding of
weight 0, so that every document is seen at position 0 as at decoding time (short supervised
examples; models with learned absolute positions learn them much faster so).

Packing is grain's `ConcatThenSplitIterDataset` rather than first-fit/best-fit: it wastes no
tokens on padding (documents are split across rows, as in standard LM pre-training) and one
long document (tiny_shakespeare) simply spans many rows. Every row boundary costs one
prediction: a row's first token is an input only.

Every process runs the whole pipeline and keeps its slice of each global batch, so that its
rows are exactly those a single process would give it (1-host and N-host runs see the same
global batches). Tokenizing and packing are cheap next to a training step; the duplicated
work buys exact reproducibility across topologies.
"""

import functools
from typing import Any

import grain
import numpy as np

_TOKENS = "tokens"
_LOSS_MASK = "loss_mask"


def _tokenize(record: dict[str, str], *, tokenizer) -> dict[str, np.ndarray]:
  """Encodes one document and appends EOS."""
  ids = tokenizer.encode(record["text"])
  return {_TOKENS: np.append(ids, np.int32(tokenizer.eos_id)).astype(np.int32)}


def _tokenize_completion(record: dict[str, str], *, tokenizer) -> dict[str, np.ndarray]:
  """Encodes prompt and completion, appends EOS; the loss mask is 1 on completion + EOS."""
  if "prompt" not in record or "completion" not in record:
    raise KeyError(f"completion_only_loss needs records with 'prompt' and 'completion', got "
                   f"keys {sorted(record)}")
  prompt = np.asarray(tokenizer.encode(record["prompt"]), np.int32)
  completion = np.asarray(tokenizer.encode(record["completion"]), np.int32)
  tokens = np.concatenate([prompt, completion, [tokenizer.eos_id]]).astype(np.int32)
  mask = np.concatenate([np.zeros(len(prompt)), np.ones(len(completion) + 1)]).astype(np.int32)
  return {_TOKENS: tokens, _LOSS_MASK: mask}


def _to_example(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Turns a packed row of seq_len + 1 tokens into next-token inputs, targets and weights.

  Only the very last row of a finite pass has padding (segment id 0); its targets weigh 0. With
  a packed loss mask, targets that are prompt tokens weigh 0 as well.
  """
  row = packed[_TOKENS]
  weights = packed[f"{_TOKENS}_segment_ids"] != 0
  if _LOSS_MASK in packed:
    weights = weights & (packed[_LOSS_MASK] != 0)
  return {
      "inputs": row[:-1],
      "targets": row[1:],
      "weights": weights[1:].astype(np.float32),
  }


def _to_padded_example(tokenized: dict[str, np.ndarray], *, seq_len: int,
                       start_id: int) -> dict[str, np.ndarray]:
  """One document as a row: start token, the document, padding (targets of weight 0)."""
  tokens = np.concatenate([[start_id], tokenized[_TOKENS]]).astype(np.int32)
  if len(tokens) > seq_len + 1:
    raise ValueError(f"a document of {len(tokens) - 1} tokens does not fit one row of seq_len="
                     f"{seq_len} (+1 start token) with pack_documents=False")
  mask = tokenized.get(_LOSS_MASK, np.ones(len(tokens) - 1, np.int32))
  row = np.zeros(seq_len + 1, np.int32)
  row[:len(tokens)] = tokens
  weights = np.zeros(seq_len, np.float32)
  weights[:len(tokens) - 1] = mask != 0
  return {"inputs": row[:-1], "targets": row[1:], "weights": weights}


def _local_rows(batch: dict[str, np.ndarray], *, start: int, stop: int) -> dict[str, np.ndarray]:
  """Keeps rows [start, stop) of a global batch."""
  return {key: value[start:stop] for key, value in batch.items()}


def check_process_share(global_batch_size: int, process_index: int, process_count: int) -> None:
  """Raises, naming `train.global_batch_size`, unless every process gets an equal share."""
  if global_batch_size % process_count:
    raise ValueError(
        f"train.global_batch_size={global_batch_size} is not divisible by the number of"
        f" processes ({process_count})."
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count}).")


def make_lm_dataset(
    *,
    source,
    tokenizer,
    split: str,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    num_batches: int | None = None,
    read_options: grain.ReadOptions | None = None,
    shuffle_window: int = 0,
    completion_only_loss: bool = False,
    pack_documents: bool = True,
) -> grain.DatasetIterator:
  """Makes this process's iterator over batches of packed language-model rows.

  Args:
    source: A random-access source of {"text": str} (see `load_source`).
    tokenizer: A tokenizer (see `make_tokenizer`).
    split: "train" shuffles (with `seed`, differently each epoch); any other split is read
      in order, identically every time.
    seq_len: Tokens per row of inputs/targets.
    global_batch_size: Rows per global batch, summed over processes.
    seed: Shuffle seed (train only).
    process_index: This process's index.
    process_count: Number of processes sharing each global batch.
    num_epochs: Passes over the source; None means forever for "train" and 1 otherwise.
    num_batches: If set, stop after this many batches (e.g. to cap an evaluation).
    read_options: Threads and prefetching for reading and tokenizing; grain's default if None.
    shuffle_window: "train" only: shuffle packed rows within windows of this many rows, so that
      one long document does not fill whole batches (0 or 1: no row shuffle).
    completion_only_loss: records are {"prompt", "completion"}; only completion tokens (and
      the EOS after them) are targets with weight 1.
    pack_documents: pack documents into rows (True); False: one document per row, padded
      (it must fit in seq_len tokens after a start token).

  Returns:
    An iterator of {"inputs": int32[b, seq_len], "targets": int32[b, seq_len],
    "weights": float32[b, seq_len]}, b = global_batch_size // process_count, holding rows
    [process_index * b, (process_index + 1) * b) of each global batch. A finite pass pads its
    last batch with zero-weight rows. `get_state()` is a small JSON-serialisable dict and
    `set_state()` (also after a JSON round trip) resumes exactly; save it with orbax through
    `grain.checkpoint.CheckpointSave(iterator)` / `CheckpointRestore(iterator)`.
  """
  check_process_share(global_batch_size, process_index, process_count)
  training = split == "train"
  ds = grain.MapDataset.source(source)
  if training:
    ds = ds.shuffle(seed=seed)  # Followed by repeat: reshuffled with a new seed each epoch.
  ds = ds.repeat(num_epochs if training else (num_epochs or 1))
  tokenize = _tokenize_completion if completion_only_loss else _tokenize
  ds = ds.map(functools.partial(tokenize, tokenizer=tokenizer))
  if pack_documents:
    ds = ds.to_iter_dataset(read_options)
    features = (_TOKENS, _LOSS_MASK) if completion_only_loss else (_TOKENS,)
    ds = grain.experimental.ConcatThenSplitIterDataset(
        ds, length_struct={name: seq_len + 1 for name in features})
    ds = ds.map(_to_example)
  else:
    ds = ds.map(functools.partial(_to_padded_example, seq_len=seq_len,
                                  start_id=tokenizer.eos_id)).to_iter_dataset(read_options)
  if training and shuffle_window > 1:
    ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=shuffle_window, seed=seed)
  pad_batch = functools.partial(grain.experimental.batch_and_pad, batch_size=global_batch_size)
  ds = ds.batch(global_batch_size, batch_fn=pad_batch)
  local_batch = global_batch_size // process_count
  start = process_index * local_batch
  ds = ds.map(functools.partial(_local_rows, start=start, stop=start + local_batch))
  if num_batches is not None:
    ds = grain.experimental.LimitIterDataset(ds, count=num_batches)
  return _JsonSafeIterator(iter(ds))


def _as_tuples(state: Any, *, in_slices: bool = False) -> Any:
  """Turns lists back into tuples where the packing state holds (start, stop) slices."""
  if isinstance(state, dict):
    return {
        k: _as_tuples(v, in_slices=in_slices or k == "remainder_slices") for k, v in state.items()
    }
  if isinstance(state, list):
    items = [_as_tuples(v, in_slices=in_slices) for v in state]
    return tuple(items) if in_slices else items
  return state


class _JsonSafeIterator(grain.DatasetIterator):
  """Passes elements through; `set_state` also accepts a state that went through JSON.

  grain's packing compares its remainder slice with the tuple (-1, -1); after JSON (which
  grain's own orbax handler uses) it is the list [-1, -1], so a restored packer would think
  it holds a remainder and silently drop the next document. This wrapper restores the tuples.
  """

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(_as_tuples(state))
