"""Hugging Face checkpoints: import GPT-2 / Llama / Qwen3 directories onto a mesh, export back."""

from bigmodel_jax.hf.checkpoint import export_checkpoint, import_checkpoint, load_config
from bigmodel_jax.hf.config import HFCheckpointError, from_hf_config, model_type, to_hf_config

__all__ = ["HFCheckpointError", "export_checkpoint", "from_hf_config", "import_checkpoint",
           "load_config", "model_type", "to_hf_config"]
