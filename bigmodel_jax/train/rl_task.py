"""RL fine-tuning of a policy through the trainer: the policy as a `Task`, an RL method as a step.

`train_and_evaluate(config, workdir, make_step=rl_step(...), task=policy_task(...))` fine-tunes
the policy with a method of `rl.METHODS` that keeps no model besides the policy (remax,
reinforce, reinforce_mean, rloo, grpo): the trainer's state is the policy's parameters and
optimizer state; the frozen reference parameters and the reward are closed into the step; the
batch is {"prompts": int32[b, p]} (e.g. `data.array_batches.RandomBatches` over encoded prompts,
which resumes where it stopped) and the responses of step t are sampled with the key
fold_in(key(config.seed), t), so a resumed run samples what it would have sampled. PPO trains a
value model too, which the trainer's state (one parameter tree, one optimizer state) does not
hold; it runs on its own `rl.RLState`.

The step's metric "loss" is `max_reward` minus the mean sampled reward, a shortfall that stays
>= 0 for a reward bounded by `max_reward`: the non-finite guard's healthy rule (train/nonfinite.py)
then reads a reward that collapses as a loss that diverges. The surrogate loss of the policy
gradient, which can be negative, is "surrogate_loss". A step whose surrogate loss or gradient
norm is not finite is skipped, as in train/step.py. The evaluation is the reward of the greedy
responses to the evaluation prompts ("greedy_reward"; its "loss" is the same shortfall).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bigmodel_jax.models import create_model, presets
from bigmodel_jax.models.sampling import SamplingOptions, generate
from bigmodel_jax.rl import METHODS, RLOptions, RLState
from bigmodel_jax.rl.rewards import RewardFn
from bigmodel_jax.train.step import StepBuilder, keep_if_finite
from bigmodel_jax.train.task import Data, MetricsFn, Task

# The methods whose whole state is the policy, its optimizer state and the reference.
POLICY_ONLY_METHODS = tuple(name for name in METHODS if name != "ppo")


def greedy_reward_metrics(reward_fn: RewardFn, sampling: SamplingOptions, max_reward: float
                          ) -> Callable[[nnx.GraphDef], MetricsFn]:
  """graphdef -> the greedy responses' reward sums of a batch of {"prompts", "weight"}.

  Args:
    reward_fn: the reward of a response.
    sampling: max_new_tokens and eos_id of the responses (temperature and top-p are unused).
    max_reward: the reward's upper bound; "loss" sums max_reward - reward.

  Returns:
    graphdef -> (params, batch) -> {"loss", "greedy_reward", "weight"} sums.
  """
  greedy = SamplingOptions(max_new_tokens=sampling.max_new_tokens, eos_id=sampling.eos_id)

  def metrics(graphdef: nnx.GraphDef) -> MetricsFn:
    def fn(params, batch):
      out = generate(graphdef, params, batch["prompts"], jax.random.key(0), greedy, greedy=True)
      reward, weight = reward_fn(batch["prompts"], out.tokens, out.mask), batch["weight"]
      return {"loss": (weight * (max_reward - reward)).sum(),
              "greedy_reward": (weight * reward).sum(), "weight": weight.sum()}

    return fn

  return metrics


def policy_task(model_config, data: Data, init_params: Callable[[], Any],
                eval_metrics: Callable[[nnx.GraphDef], MetricsFn]) -> Task:
  """The transformer policy of `model_config`, starting from `init_params`, on prompt batches.

  Args:
    model_config: the policy's TransformerConfig.
    data: batches of {"prompts"} for training and of {"prompts", "weight"} for evaluation.
    init_params: () -> the starting parameters (e.g. the supervised fine-tuned ones).
    eval_metrics: e.g. `greedy_reward_metrics(...)`.

  Returns:
    The Task (no training loss of its own: the RL step samples its responses).
  """
  return Task(model_config=model_config, create_model=create_model, data=data, train_loss=None,
              eval_metrics=eval_metrics, name=f"policy ({presets.describe(model_config)})",
              init_params=init_params)


def rl_step(method_name: str, options: RLOptions, reward_fn: RewardFn, ref_params,
            max_reward: float) -> StepBuilder:
  """The step of the RL method `method_name` as the trainer's step builder.

  Args:
    method_name: one of POLICY_ONLY_METHODS.
    options: the RL options.
    reward_fn: the reward of a response.
    ref_params: the frozen reference policy (pure dict), the KL anchor.
    max_reward: the reward's upper bound (the step's "loss" is the shortfall from it).

  Returns:
    A StepBuilder; its optimizer sees the whole gradient, but not optax's extra arguments.
  """
  if method_name not in POLICY_ONLY_METHODS:
    raise ValueError(f"rl_step: method {method_name!r} must be one of {POLICY_ONLY_METHODS} "
                     "(PPO's value model is not part of the trainer's state)")

  def build(graphdef, task, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
            config):
    del task
    method = METHODS[method_name](graphdef, optimizer, reward_fn, options)
    key = jax.random.key(config.seed)

    def train_step(state, batch):
      before = RLState(state.step, state.params, state.opt_state, ref_params)
      after, metrics = method.step(before, batch["prompts"], jax.random.fold_in(key, state.step))
      finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
      params, opt_state = keep_if_finite(finite, (after.params, after.opt_state),
                                         (state.params, state.opt_state))
      metrics = {**metrics, "surrogate_loss": metrics["loss"],
                 "loss": max_reward - metrics["sampled_reward"],
                 "update_norm": optax.tree.norm(jax.tree.map(jnp.subtract, after.params,
                                                             state.params)),
                 "param_norm": optax.tree.norm(params), "lr": schedule(state.step),
                 "finite": finite}
      return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step

  return StepBuilder(build, whole_gradient=False)
