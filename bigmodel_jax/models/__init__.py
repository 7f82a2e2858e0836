"""Decoder-only transformers (GPT-2, Llama) in Flax NNX with stacked, scanned layers."""

from bigmodel_jax.models.config import RopeScaling, TransformerConfig
from bigmodel_jax.models.factory import create_model
from bigmodel_jax.models.gpt2 import GPT2
from bigmodel_jax.models.llama import Llama

__all__ = ["GPT2", "Llama", "RopeScaling", "TransformerConfig", "create_model"]
