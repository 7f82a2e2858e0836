"""Adam's (b1, b2) region: the counterexample, its vectorised Adam and the experiment."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax.optim import adam_counterexample as ce


@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.0, 0.5), (0.99, 0.9)])
def test_vectorised_adam_matches_optax_adam(b1, b2):
  # Spec B1: the hand-written scan is the library's Adam, on the counterexample's own gradients.
  with jax.enable_x64(True):
    n, a, x0, steps, eta0, eps = 5, 1.0, -3.0, 100, 0.5, 1e-8
    order = ce.sample_order(jax.random.key(3), n, steps, "iid")
    gap = ce.adam_gaps(jnp.float64(b1), jnp.float64(b2), n=n, a=a, x0=x0, steps=steps,
                       eta0=eta0, eps=eps, order=order)
    optimizer = optax.adam(lambda count: eta0 / jnp.sqrt(count + 1.0), b1=b1, b2=b2, eps=eps)
    x, state = jnp.float64(x0), optimizer.init(jnp.float64(x0))
    for index in np.asarray(order):
      g0, gi = ce.sample_gradients(x, n, a)
      updates, state = optimizer.update(jnp.where(index == 0, g0, gi), state)
      x = optax.apply_updates(x, updates)
    np.testing.assert_allclose(gap, abs(x - ce.X_STAR), rtol=1e-6)


@pytest.mark.parametrize("n", [3, 10])
def test_counterexample_gradients_and_minimiser(n):
  # Spec B2: gradients of the piecewise definitions, the mean gradient and x* = -2.
  a = 1.0
  xs = jnp.array([-5.0, -3.0, -2.0, -1.5, -1.0, 0.0, 2.0])
  for which in (0, 1):
    grad = jax.vmap(jax.grad(lambda x: ce.sample_losses(x, n, a)[which]))(xs)  # noqa: B023
    np.testing.assert_allclose(grad, ce.sample_gradients(xs, n, a)[which], rtol=1e-6)

  def mean_grad(x):
    g0, gi = ce.sample_gradients(x, n, a)
    return (g0 + (n - 1) * gi) / n

  assert float(mean_grad(0.0)) == pytest.approx(1 / n)
  assert float(mean_grad(-3.0)) == pytest.approx((-3.0 + 2) / n)
  assert float(mean_grad(ce.X_STAR)) == 0.0
  f = lambda x: sum(ce.sample_losses(x, n, a)[0 if i == 0 else 1] for i in range(n)) / n
  grid = jnp.linspace(-6.0, 3.0, 901)
  assert float(grid[jnp.argmin(jax.vmap(f)(grid))]) == pytest.approx(ce.X_STAR, abs=0.01)


def test_small_b2_diverges_and_large_b2_converges():
  with jax.enable_x64(True):
    order = ce.sample_order(jax.random.key(0), 3, 5_000, "shuffle")
    gaps = ce.adam_gaps(jnp.array([0.0, 0.0]), jnp.array([0.3, 0.999]), n=3, a=1.0, x0=-3.0,
                        steps=5_000, eta0=1.0, eps=1e-8, order=order)
  assert gaps[0] > 10 and gaps[1] < 0.1


def test_shuffled_order_is_a_permutation_per_epoch():
  order = np.asarray(ce.sample_order(jax.random.key(0), 4, 10, "shuffle"))
  assert sorted(order[:4]) == sorted(order[4:8]) == [0, 1, 2, 3]
  with pytest.raises(ValueError, match="sampling"):
    ce.sample_order(jax.random.key(0), 4, 10, "cyclic")


def test_experiment_small_writes_every_output(tmp_path):
  workdir = str(tmp_path / "run")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.adam_betas", "--config=configs/adam_betas.py:small",
       f"--workdir={workdir}", f"--config.transformer.data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("config.json", "metrics.jsonl", "summary.json", "counterexample.png",
               "transformer.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert set(summary["counterexample"]["criteria"]) == {"B3", "B4", "B6", "B7"}
  assert set(summary["transformer"]["criteria"]) == {"T1", "T2", "T3"}
  assert np.isfinite(summary["transformer"]["final_loss"]["4"]).all()
