r"""Fine-tuning vs forgetting.

  python -m experiments.finetune --config=configs/finetune_forgetting.py \
      --config.init_from=/tmp/mofo_pretrain --workdir=/tmp/mofo_finetune

Starts from a checkpoint of experiments.pretrain (`--config.init_from=WORKDIR`; the model comes
from the checkpoint) or from a Hugging Face Llama / GPT-2 directory (`--config.init_from=hf:DIR`,
whose tokenizer.json then tokenizes all data), fine-tunes it on generated addition problems
("07+35=240\n": answers least-significant digit first; one problem per row, the loss on the
answer tokens only, as in supervised fine-tuning) with every method of `finetune.methods`
at every learning rate of `finetune.lrs` (equal steps), and measures fine-tune accuracy / loss,
forgetting (increase of the validation loss on the pre-training corpus `data`, which must be the
pre-training run's), and the distance to the pre-trained weights.

A method is an optimizer name of the factory, optionally with its own hyperparameter after "@":
"mofo@0.1" sets opt.fraction, "adamw_l2sp@1.0" sets opt.l2sp. `get_config("small")` is a
seconds-long version for tests.
"""

from configs import default


def get_config(mode: str = ""):
  """The fine-tuning comparison; mode "small" shrinks every size for an end-to-end test."""
  c = default.get_config()
  # Workdir of experiments.pretrain (its checkpoints/ and config.json), or "hf:DIR": a Hugging
  # Face Llama / GPT-2 directory, whose tokenizer.json then tokenizes all data.
  c.init_from = ""
  c.init_step = -1  # the pretrain workdir's checkpoint to start from; -1: its latest
  c.finetune = dict(
      task="arithmetic",
      digits=2,  # digits per operand: 10^4 problems
      reverse_answer=True,  # answers least-significant digit first ("07+35=240")
      loss_on="answer",  # "answer": loss on answer tokens only (SFT); "document": every token
      pack_problems=False,  # one problem per row at position 0 (True: packed like pre-training)
      validation_fraction=0.2,
      split_seed=0,
      seq_len=16,  # a problem is 12 tokens with its start and end tokens
      batch_size=64,
      steps=2500,
      log_every=100,
      eval_batches=8,  # fine-tune validation loss: batches of batch_size x seq_len
      accuracy_problems=400,  # validation problems decoded for the exact-match accuracy
      methods=("adamw", "mofo@0.05", "mofo@0.1", "mofo@0.15", "adamw_l2sp@1.0"),
      lrs=(1e-3, 3e-3),
      target_method="mofo@0.1",  # compared with target_baseline in summary.json
      target_baseline="adamw",
  )
  c.opt.update(schedule="cosine", warmup_steps=10, weight_decay=0.0, b2=0.999)
  c.train.eval_batches = 8  # pre-training validation loss: batches of the pre-training data
  if mode == "small":
    c.finetune.update(steps=4, log_every=2, seq_len=32, batch_size=8, eval_batches=1,
                      accuracy_problems=8, methods=("adamw", "mofo@0.1", "adamw_l2sp@1.0"),
                      lrs=(1e-3,))
    c.opt.warmup_steps = 1
    c.train.eval_batches = 1
  elif mode:
    raise ValueError(f"configs/finetune_forgetting.py: unknown mode {mode!r} (use '' or 'small')")
  return c
