"""`make pretrain`: a small byte-level GPT-2 on the embedded corpus, ~5 minutes on 2 CPU cores."""

from configs import default


def get_config():
  """The main job's config: configs/default.py as it stands."""
  return default.get_config()
