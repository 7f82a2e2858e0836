"""RL fine-tuning of language models as pure functional steps: ReMax and its baselines."""

from bigmodel_jax.rl.factory import METHODS, make_method
from bigmodel_jax.rl.options import RLOptions
from bigmodel_jax.rl.remax import make_remax
from bigmodel_jax.rl.rollout import Method, Rollout, Scores
from bigmodel_jax.rl.state import RLState, init_state, state_bytes

__all__ = ["METHODS", "Method", "RLOptions", "RLState", "Rollout", "Scores", "init_state",
           "make_method", "make_remax", "state_bytes"]
