"""GPT-2 at its published sizes (Radford et al. 2019): `--config=configs/gpt2.py:124m`.

Sizes: 124m, 355m, 774m, 1.5b (vocab 50257, context 1024, tied embeddings), plus `tiny` for tests.
"""

from configs import default

SIZES = {
    # name: (layers, heads, embed_dim)
    "tiny": (2, 2, 64),
    "124m": (12, 12, 768),
    "355m": (24, 16, 1024),
    "774m": (36, 20, 1280),
    "1.5b": (48, 25, 1600),
}


def get_config(size: str = "124m"):
  """GPT-2 of the given size.

  Args:
    size: one of SIZES.

  Returns:
    The config.
  """
  if size not in SIZES:
    raise ValueError(f"configs/gpt2.py: unknown size {size!r}; choose one of {sorted(SIZES)}")
  layers, heads, width = SIZES[size]
  c = default.get_config()
  c.model.update(architecture="gpt2", num_layers=layers, num_heads=heads, num_kv_heads=heads,
                 head_dim=width // heads, embed_dim=width, mlp_dim=4 * width, max_seq_len=1024,
                 vocab_size=50257 if size != "tiny" else 0, tie_embeddings=True)
  if size == "tiny":
    c.model.max_seq_len = c.data.seq_len
  else:
    c.data.seq_len = 1024
    c.opt.lr = 6e-4
  return c
