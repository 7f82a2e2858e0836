"""Hugging Face checkpoints: import Llama / GPT-2 directories onto a mesh, export them back."""

from bigmodel_jax.hf.checkpoint import export_checkpoint, import_checkpoint, load_config
from bigmodel_jax.hf.config import HFCheckpointError, from_hf_config, to_hf_config

__all__ = ["HFCheckpointError", "export_checkpoint", "from_hf_config", "import_checkpoint",
           "load_config", "to_hf_config"]
