"""Semi-open models: closing decoder layers, the recovery difficulty RD and SCARA's choice.

Reference: Huang et al., "Archilles' Heel in Semi-open LLMs: Hiding Bottom against Recovery
Attacks" (arXiv 2410.11182, 2024); spec: shared/reference/SEMI_OPEN_AND_ADAM_BETAS.md, part A.
"""

from bigmodel_jax.semi_open.freezing import freeze_updates, trainable_mask, with_mask
from bigmodel_jax.semi_open.recovery_difficulty import rd_curve, scara_choice
from bigmodel_jax.semi_open.replacement import fresh_params, layer_mask, replace_layers

__all__ = ["freeze_updates", "fresh_params", "layer_mask", "rd_curve", "replace_layers",
           "scara_choice", "trainable_mask", "with_mask"]
