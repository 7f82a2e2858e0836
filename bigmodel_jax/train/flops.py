"""Model FLOPs per token and model-FLOPs utilisation (MFU).

The count follows the PaLM paper (Chowdhery et al. 2022, appendix B): 6 FLOPs per matmul
parameter per token for the forward and backward passes, plus 12 * layers * heads * head_dim *
seq_len for attention scores. Rematerialisation is not counted (that is what makes it *model*
FLOPs).
"""

import jax

from bigmodel_jax.models import TransformerConfig

# Dense bf16 peak FLOP/s per device, from the vendors' data sheets (no sparsity).
PEAK_FLOPS_BY_DEVICE_KIND = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs (forward + backward) per token.

  Args:
    config: the model configuration.
    seq_len: the training sequence length.

  Returns:
    FLOPs per token.
  """
  lookup_params = 0 if config.tie_embeddings else config.vocab_size * config.embed_dim
  if not config.use_rope:  # the learned position table
    lookup_params += config.max_seq_len * config.embed_dim
  matmul_params = config.num_params() - lookup_params
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return 6.0 * matmul_params + attention


def peak_flops_per_device(configured: float | None = None) -> float | None:
  """Peak FLOP/s of one local device: `configured` if given, else the table, else None."""
  if configured:
    return float(configured)
  kind = jax.local_devices()[0].device_kind
  return PEAK_FLOPS_BY_DEVICE_KIND.get(kind)
