"""Llama shapes (Touvron et al. 2023; Llama 3): `--config=configs/llama.py:llama2-7b`.

Sizes: tiny, 20m, 60m (CPU sizes, byte-level), 1b (Llama-3.2-1B), llama2-7b, llama3-8b.
"""

from configs import default

SIZES = {
    # name: dict of model fields
    "tiny": dict(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, embed_dim=64,
                 mlp_dim=172, vocab_size=0, max_seq_len=256),
    "20m": dict(num_layers=6, num_heads=8, num_kv_heads=4, head_dim=64, embed_dim=512,
                mlp_dim=1376, vocab_size=0, max_seq_len=256),
    "60m": dict(num_layers=10, num_heads=12, num_kv_heads=4, head_dim=64, embed_dim=768,
                mlp_dim=2048, vocab_size=0, max_seq_len=512),
    "1b": dict(num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64, embed_dim=2048,
               mlp_dim=8192, vocab_size=128256, max_seq_len=131072, rope_theta=500000.0,
               tie_embeddings=True,
               rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192)),
    "llama2-7b": dict(num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
                      embed_dim=4096, mlp_dim=11008, vocab_size=32000, max_seq_len=4096),
    "llama3-8b": dict(num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, embed_dim=4096,
                      mlp_dim=14336, vocab_size=128256, max_seq_len=8192, rope_theta=500000.0),
}


def get_config(size: str = "20m"):
  """Llama of the given size.

  Args:
    size: one of SIZES.

  Returns:
    The config.
  """
  if size not in SIZES:
    raise ValueError(f"configs/llama.py: unknown size {size!r}; choose one of {sorted(SIZES)}")
  c = default.get_config()
  c.model.update(architecture="llama", norm_eps=1e-5, tie_embeddings=False, rope_theta=10000.0)
  c.model.update(**SIZES[size])
  c.data.seq_len = min(c.model.max_seq_len, 256 if c.model.vocab_size == 0 else 2048)
  return c
