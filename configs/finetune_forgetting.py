r"""Fine-tuning vs forgetting.

  python -m experiments.finetune --config=configs/finetune_forgetting.py \
      --config.init_from=/tmp/mofo_pretrain --workdir=/tmp/mofo_finetune

Starts from a checkpoint of experiments.pretrain (`--config.init_from=WORKDIR`; the model comes
from the checkpoint) or from a Hugging Face Llama / GPT-2 directory (`--config.init_from=hf:DIR`,
whose tokenizer.json then tokenizes all data), fine-tunes it on generated addition problems
("07+35=240\n": answers least-significant digit first; one problem per row, the loss on the
answer tokens only, as in supervised fine-tuning) with every method of `finetune.methods`
at every learning rate of `finetune.lrs` (`train.steps` steps each, one trainer run in
WORKDIR/<method>_lr<lr>/), and measures fine-tune accuracy / loss,
forgetting (increase of the validation loss on the pre-training corpus `data`, which must be the
pre-training run's), and the distance to the pre-trained weights.

A method is an optimizer name of the factory, optionally with its own hyperparameter after "@":
"mofo@0.1" sets opt.fraction, "adamw_l2sp@1.0" sets opt.l2sp. `get_config("small")` is a
seconds-long version for tests.
"""

from configs import default


def get_config(mode: str = ""):
  """The fine-tuning comparison; mode "small" shrinks every size for an end-to-end test.

  Every run goes through the trainer: `train` (steps, batch size, logging, evaluation and
  checkpoints of each run), `opt` (the optimizer of every method; each run sets its name,
  learning rate and parameter), `loss`, `mesh` and `sharding_rules` are the shared sections of
  configs/default.py. `model` gives the numerics of an "hf:" import (a pretrain workdir's
  checkpoint fixes the whole model); `data` is the pre-training corpus, on which forgetting is
  measured (it must be the pre-training run's).
  """
  c = default.get_config("seed", "model", "data", "train", "loss", "opt", "mesh",
                         "sharding_rules")
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
      accuracy_problems=400,  # validation problems decoded for the exact-match accuracy
      # pre-training validation loss: batches of train.global_batch_size x data.seq_len
      pretrain_eval_batches=2,
      methods=("adamw", "mofo@0.05", "mofo@0.1", "mofo@0.15", "adamw_l2sp@1.0"),
      lrs=(1e-3, 3e-3),
      target_method="mofo@0.1",  # compared with target_baseline in summary.json
      target_baseline="adamw",
  )
  # Each run: train.steps steps of train.global_batch_size problems; the trainer's evaluation
  # (eval_loss) is the fine-tune validation loss over train.eval_batches batches.
  c.train.update(steps=2500, global_batch_size=64, log_every=100, eval_every=500,
                 eval_batches=8, checkpoint_every=500, keep_checkpoints=2, sample_tokens=0)
  c.opt.update(schedule="cosine", warmup_steps=10, weight_decay=0.0, b2=0.999)
  if mode == "small":
    c.train.update(steps=4, log_every=2, eval_every=4, checkpoint_every=4, global_batch_size=8,
                   eval_batches=1)
    c.finetune.update(seq_len=32, accuracy_problems=8, pretrain_eval_batches=1,
                      methods=("adamw", "mofo@0.1", "adamw_l2sp@1.0"), lrs=(1e-3,))
    c.opt.warmup_steps = 1
  elif mode:
    raise ValueError(f"configs/finetune_forgetting.py: unknown mode {mode!r} (use '' or 'small')")
  return c
