"""The optimizer factory: every registered optimizer builds, steps, and fails clearly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax.models import LAYER_AXES
from bigmodel_jax.optim.weight_decay import decay_mask
from bigmodel_jax.train import optimizers as factory
from configs import default


def _params():
  return {
      "embed": {"embedding": jnp.ones((8, 4))},
      "layers": {"mlp": {"up": {"kernel": jnp.ones((2, 4, 6)), "bias": jnp.ones((2, 6))}},
                 "attn_norm": {"scale": jnp.ones((2, 4))}},
  }


def test_unknown_optimizer_names_the_key():
  opt = default.get_config().opt
  opt.name = "adamx"
  with pytest.raises(ValueError, match=r"opt\.name='adamx'.*adamw"):
    factory.make_optimizer(opt, total_steps=1000)


def test_warmup_then_cosine_schedule():
  opt = default.get_config().opt
  opt.update(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
  schedule = factory.make_schedule(opt, total_steps=110)
  np.testing.assert_allclose(schedule(5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.0, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 0.55, rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 0.1, rtol=1e-5)


def test_warmup_longer_than_run_is_an_error():
  opt = default.get_config().opt
  opt.warmup_steps = 50
  with pytest.raises(ValueError, match="opt.warmup_steps"):
    factory.make_optimizer(opt, total_steps=50)


def test_decay_mask_spares_norms_and_biases_even_when_stacked():
  for mask in (decay_mask(_params(), LAYER_AXES), factory.decay_mask(_params())):
    assert mask["embed"]["embedding"] and mask["layers"]["mlp"]["up"]["kernel"]
    assert not mask["layers"]["mlp"]["up"]["bias"]
    assert not mask["layers"]["attn_norm"]["scale"]  # 2-D because layers are stacked
  # Undeclared, a stacked norm scale is a matrix: the declaration is what tells them apart.
  assert decay_mask(_params())["layers"]["attn_norm"]["scale"]


def test_adamw_decays_only_masked_leaves():
  opt = default.get_config().opt
  opt.update(name="adamw", schedule="constant", lr=0.1, weight_decay=0.5, max_grad_norm=0.0)
  optimizer, _ = factory.make_optimizer(opt, total_steps=1000)
  params = _params()
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["embed"]["embedding"], -0.05)
  np.testing.assert_allclose(updates["layers"]["attn_norm"]["scale"], 0.0)
  np.testing.assert_allclose(updates["layers"]["mlp"]["up"]["bias"], 0.0)


def test_user_registered_optimizer_is_selectable():
  name = "test_plain_sgd"
  if name not in factory.available_optimizers():
    factory.register(name)(lambda opt, lr: optax.sgd(lr))
  opt = default.get_config().opt
  opt.name = name
  optimizer, _ = factory.make_optimizer(opt, total_steps=1000)
  assert optimizer.init(_params()) is not None
  with pytest.raises(ValueError, match="registered twice"):
    factory.register(name)(lambda opt, lr: optax.sgd(lr))


_ADAM_FAMILY = ("adamw", "adam_mini", "adam_mini_per_tensor", "mofo", "adamw_l2sp")


def _opt(name, b1, b2):
  opt = default.get_config().opt
  opt.update(name=name, b1=b1, b2=b2)
  return opt


@pytest.mark.parametrize("name", _ADAM_FAMILY)
@pytest.mark.parametrize("b1, b2", [(0.9, 0.8), (0.95, 0.9), (0.99, 0.98), (0.9, 0.81), (0.0, 0.0)])
def test_adam_family_warns_outside_the_convergence_region(name, b1, b2):
  with pytest.warns(factory.AdamBetaWarning, match=r"opt\.b1=.* >= sqrt\(opt\.b2\)"):
    factory.make_optimizer(_opt(name, b1, b2), 100)


@pytest.mark.parametrize("name", _ADAM_FAMILY)
@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.9, 0.95), (0.0, 0.5), (0.95, 0.95)])
def test_adam_family_is_silent_inside_the_convergence_region(name, b1, b2, recwarn):
  factory.make_optimizer(_opt(name, b1, b2), 100)
  assert not [w for w in recwarn if issubclass(w.category, factory.AdamBetaWarning)]


@pytest.mark.parametrize("b1, b2, key", [(1.0, 0.999, "opt.b1"), (0.9, 1.0, "opt.b2"),
                                         (-0.1, 0.999, "opt.b1"), (0.9, -0.5, "opt.b2")])
def test_adam_betas_outside_unit_interval_name_the_key(b1, b2, key):
  with pytest.raises(ValueError, match=key):
    factory.make_optimizer(_opt("adamw", b1, b2), 100)


@pytest.mark.parametrize("name", ["sgd", "lion", "adafactor"])
def test_beta_check_is_not_applied_to_other_optimizers(name, recwarn):
  factory.make_optimizer(_opt(name, 0.99, 0.5), 100)
  assert not [w for w in recwarn if issubclass(w.category, factory.AdamBetaWarning)]
