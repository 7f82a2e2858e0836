"""Customising a semi-open model: fine-tuning only its public blocks on a downstream task.

Huang et al., arXiv 2410.11182, §5.3 / Fig. 3 (LoRA on the public decoder blocks, LLaMA-Factory):
here the generated arithmetic task, full fine-tuning of the public blocks, the closed blocks
frozen with the victim's weights (gradients flow through them) and embeddings, positions, final
norm and head frozen in every scheme; greedy exact-match accuracy on held-out problems (spec
A.7.6).
"""

import numpy as np

from bigmodel_jax.data import ByteTokenizer, arithmetic, make_lm_dataset
from bigmodel_jax.semi_open.recovery import MaskedTrainer


def arithmetic_batches(source: arithmetic.ArithmeticSource, steps: int, batch_size: int,
                       seq_len: int, seed: int) -> dict[str, np.ndarray]:
  """`steps` batches of one problem per row (answer-only loss), stacked on a leading axis."""
  iterator = make_lm_dataset(source=source, tokenizer=ByteTokenizer(), split="train",
                             seq_len=seq_len, global_batch_size=batch_size, seed=seed,
                             completion_only_loss=True, pack_documents=False)
  batches = [next(iterator) for _ in range(steps)]
  return {k: np.stack([b[k] for b in batches]) for k in ("inputs", "targets", "weights")}


def customise(trainer: MaskedTrainer, params: dict, mask: dict, batches: dict, decode,
              validation: arithmetic.ArithmeticSource, num_problems: int) -> dict:
  """Fine-tunes the True entries of `mask` and scores exact-match accuracy.

  Args:
    trainer: the compiled trainer of the customisation batches.
    params: the victim's parameters.
    mask: `trainable_mask(params, public_blocks, train_others=False)`.
    batches: from `arithmetic_batches`.
    decode: `models.sampling.make_greedy_decoder(graphdef, digits + 1)`.
    validation: the held-out problems.
    num_problems: how many of them are scored.

  Returns:
    {"accuracy", "final_train_loss"}.
  """
  state, metrics = trainer.train(trainer.init(params, mask), batches)
  accuracy = arithmetic.exact_match_accuracy(decode, state.params, validation, ByteTokenizer(),
                                             num_problems)
  return {"accuracy": accuracy, "final_train_loss": float(metrics["loss"][-1])}
