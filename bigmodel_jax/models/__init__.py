"""Decoder-only transformers (GPT-2, Llama) in Flax NNX with stacked, scanned layers."""

from bigmodel_jax.models.config import RopeScaling, TransformerConfig
from bigmodel_jax.models.factory import create_model
from bigmodel_jax.models.gpt2 import GPT2
from bigmodel_jax.models.llama import Llama
from bigmodel_jax.models.transformer import LAYER_AXES

__all__ = ["GPT2", "LAYER_AXES", "Llama", "RopeScaling", "TransformerConfig", "create_model"]
