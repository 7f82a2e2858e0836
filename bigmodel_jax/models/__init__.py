"""Decoder-only transformers in Flax NNX with stacked, scanned layers; the architecture is data.

`TransformerConfig` carries the features (norm, MLP, positions, biases, QK-norm, soft-caps);
`presets` names feature sets (GPT-2, Llama, Qwen3) and `from_preset` builds configs from them.
"""

from bigmodel_jax.models.config import RopeScaling, TransformerConfig
from bigmodel_jax.models.factory import create_model
from bigmodel_jax.models.presets import PRESETS, from_preset
from bigmodel_jax.models.transformer import LAYER_AXES, Transformer

__all__ = ["LAYER_AXES", "PRESETS", "RopeScaling", "Transformer", "TransformerConfig",
           "create_model", "from_preset"]
