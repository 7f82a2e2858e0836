"""nanoGPT's model and training step in PyTorch, the baseline of experiments/bench_step.py.

The architecture and the step follow Karpathy's nanoGPT (github.com/karpathy/nanoGPT, model.py
and train.py as run on a CPU with `--device=cpu --compile=False --dropout=0.0`): learned position
embeddings, pre-norm blocks with biased LayerNorm, fused QKV projection, attention through
`F.scaled_dot_product_attention(is_causal=True)`, a 4x GELU MLP, tied LM head, normal(0.02)
initialisation (residual projections scaled by 1/sqrt(2 L)), AdamW(b1 0.9, b2 0.95) with weight
decay on the matrices only, gradient clipping at 1.0, `zero_grad(set_to_none=True)`. Written here
(not imported) because nanoGPT is not a package; torch is already a test dependency.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class _Attention(nn.Module):

  def __init__(self, width: int, heads: int, layers: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)
    nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * layers))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    batch, length, width = x.shape
    q, k, v = self.qkv(x).split(width, dim=2)
    q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
               for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.proj(y.transpose(1, 2).contiguous().view(batch, length, width))


class _Block(nn.Module):

  def __init__(self, width: int, heads: int, layers: int):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width)
    self.attn = _Attention(width, heads, layers)
    self.ln_2 = nn.LayerNorm(width)
    self.fc = nn.Linear(width, 4 * width)
    self.fc_proj = nn.Linear(4 * width, width)
    nn.init.normal_(self.fc_proj.weight, std=0.02 / math.sqrt(2 * layers))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.ln_1(x))
    return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class NanoGPT(nn.Module):
  """nanoGPT's GPT: returns the mean next-token cross-entropy of (inputs, targets)."""

  def __init__(self, vocab_size: int, seq_len: int, layers: int, heads: int, width: int):
    super().__init__()
    self.wte = nn.Embedding(vocab_size, width)
    self.wpe = nn.Embedding(seq_len, width)
    self.blocks = nn.ModuleList(_Block(width, heads, layers) for _ in range(layers))
    self.ln_f = nn.LayerNorm(width)
    for name, p in self.named_parameters():
      if p.dim() == 2 and not name.endswith(("proj.weight",)):
        nn.init.normal_(p, std=0.02)
      elif name.endswith(".bias"):
        nn.init.zeros_(p)

  def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(inputs.shape[1], dtype=torch.long)
    x = self.wte(inputs) + self.wpe(positions)
    for block in self.blocks:
      x = block(x)
    logits = self.ln_f(x) @ self.wte.weight.T  # tied LM head
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def make_step(model: NanoGPT, lr: float = 1e-3, weight_decay: float = 0.1):
  """nanoGPT's training step: forward, backward, clip at 1.0, AdamW, zero_grad.

  Returns:
    step(inputs, targets) -> the loss as a Python float (nanoGPT reads it every log step; here
    every step, which synchronises like `block_until_ready`).
  """
  decay = [p for p in model.parameters() if p.dim() >= 2]
  no_decay = [p for p in model.parameters() if p.dim() < 2]
  optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.95))

  def step(inputs: torch.Tensor, targets: torch.Tensor) -> float:
    loss = model(inputs, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  return step
