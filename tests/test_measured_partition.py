"""hessian.propose_partition on losses whose Hessian blocks are known, and the experiment."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax import blocks
from bigmodel_jax.hessian import measured_partition as mp
from bigmodel_jax.hessian import propose_partition

KEY = jax.random.key(0)


def _dense_quadratic(rng, size: int, rank: int = 2):
  """A dense PSD quadratic form of rank `rank` on a vector of `size` entries."""
  factors = jnp.asarray(rng.standard_normal((rank, size)) + 1.0, jnp.float32)
  return lambda x: 0.5 * jnp.sum((factors @ x.reshape(-1)) ** 2)


def _block_sum(rng, pieces: int, size: int):
  """sum_b q_b(x_b): one dense quadratic per block, so H is block-diagonal by construction."""
  forms = [_dense_quadratic(rng, size) for _ in range(pieces)]
  return lambda blocks_: sum(q(b) for q, b in zip(forms, blocks_))


def test_recovers_one_block_per_output_neuron():
  rng = np.random.default_rng(0)
  d_in, d_out = 6, 5
  per_neuron = _block_sum(rng, d_out, d_in)
  loss = lambda p: per_neuron([p["w"][:, j] for j in range(d_out)])
  params = {"w": jnp.asarray(rng.standard_normal((d_in, d_out)), jnp.float32)}
  partition, report = propose_partition(loss, params, KEY)
  assert partition["w"] == blocks.Blocks((0,))
  entry = report["w"]
  assert entry["chosen"] == "per index of axis 1" and entry["num_blocks"] == d_out
  by_name = {e["name"]: e for e in entry["candidates"]}
  assert by_name["per index of axis 1"]["leakage"] < 1e-6
  assert by_name["per element"]["leakage"] > 0.5
  assert by_name["per index of axis 0"]["leakage"] > 0.5
  assert [e["num_blocks"] for e in entry["candidates"]] == sorted(
      (e["num_blocks"] for e in entry["candidates"]), reverse=True)


@pytest.mark.parametrize("head_sizes", [None, (4,)])
def test_recovers_fused_heads_as_contiguous_groups(head_sizes):
  rng = np.random.default_rng(1)
  width, heads, head_dim = 4, 3, 4
  per_head = _block_sum(rng, heads, width * head_dim)
  loss = lambda p: per_head([p["q"][:, h * head_dim:(h + 1) * head_dim] for h in range(heads)])
  params = {"q": jnp.asarray(rng.standard_normal((width, heads * head_dim)), jnp.float32)}
  partition, report = propose_partition(loss, params, KEY, head_sizes=head_sizes)
  assert partition["q"] == blocks.Blocks((0, 2), (width, heads, head_dim))
  assert report["q"]["chosen"] == "per group of 4 along axis 1"
  assert partition["q"].count((width, heads * head_dim)) == heads


def test_dense_hessian_gets_the_whole_tensor():
  rng = np.random.default_rng(2)
  dense = _dense_quadratic(rng, 24)
  partition, report = propose_partition(lambda p: dense(p["w"]), {"w": jnp.ones((4, 6))}, KEY)
  assert partition["w"] == blocks.Blocks((0, 1))
  assert report["w"]["chosen"] == "whole tensor"
  assert all(e["leakage"] > 0.3 for e in report["w"]["candidates"] if e["num_blocks"] > 1)


def test_vectors_diagonal_versus_dense():
  rng = np.random.default_rng(3)
  curvature = jnp.asarray(rng.uniform(1.0, 2.0, 8), jnp.float32)
  dense = _dense_quadratic(rng, 8)
  loss = lambda p: 0.5 * jnp.sum(curvature * p["bias"] ** 2) + dense(p["scale"])
  params = {"bias": jnp.ones(8), "scale": jnp.ones(8), "count": jnp.ones(())}
  partition, report = propose_partition(loss, params, KEY)
  assert partition["bias"] == blocks.Blocks(())
  assert partition["scale"] == blocks.Blocks((0,))
  assert partition["count"] == blocks.Blocks(())
  assert report["bias"]["chosen"] == "per element"


def test_stacked_leaf_is_never_reduced_across_layers():
  rng = np.random.default_rng(4)
  layers, width, heads, head_dim = 2, 4, 3, 4
  dense = _dense_quadratic(rng, layers * width * 5, rank=3)  # couples the layers too
  per_head = [_block_sum(rng, heads, width * head_dim) for _ in range(layers)]

  def loss(p):
    q = p["layers"]["q"]
    fused = sum(f([q[i, :, h * head_dim:(h + 1) * head_dim] for h in range(heads)])
                for i, f in enumerate(per_head))
    return fused + dense(p["layers"]["dense"])

  params = {"layers": {"q": jnp.ones((layers, width, heads * head_dim)),
                       "dense": jnp.ones((layers, width, 5))}}
  partition, report = propose_partition(loss, params, KEY, layer_axes={"layers": 0},
                                        head_sizes=(4,))
  assert partition["layers"]["dense"] == blocks.Blocks((1, 2))
  assert partition["layers"]["q"] == blocks.Blocks((1, 3), (layers, width, heads, head_dim))
  assert partition["layers"]["q"].count((layers, width, heads * head_dim)) == layers * heads
  assert report["layers/q"]["num_blocks"] == layers * heads
  assert len(report["layers/q"]["candidates"][0]["per_layer"]) == layers
  assert report["layers/dense"]["cross_layer_leakage"] > 0.1


def test_one_whole_model_compile_measures_the_same():
  rng = np.random.default_rng(7)
  per_neuron = _block_sum(rng, 4, 3)
  dense = _dense_quadratic(rng, 6)
  loss = lambda p: per_neuron([p["w"][:, j] for j in range(4)]) + dense(p["v"]) * jnp.sum(p["w"])
  params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "v": jnp.ones((2, 3))}
  per_leaf, report = propose_partition(loss, params, KEY, probe_batch=3)
  once, report_once = propose_partition(loss, params, KEY, probe_batch=3, compile_per_leaf=False)
  assert per_leaf == once
  for name, entry in report.items():
    for a, b in zip(entry["candidates"], report_once[name]["candidates"]):
      np.testing.assert_allclose(a["leakage"], b["leakage"], rtol=1e-4, atol=1e-6)


def test_layer_axis_in_the_middle_keeps_its_place_in_the_view():
  cand = mp.Candidate("per group of 4 along axis 0", (3, 4), (0,))
  spec = mp.to_blocks(cand, (12,), layer_axis=1, num_layers=2)
  assert spec == blocks.Blocks((1,), (3, 4, 2))
  cand = mp.Candidate("per index of axis 1", (6, 5), (1,))
  assert mp.to_blocks(cand, (6, 5), layer_axis=1, num_layers=3) == blocks.Blocks((0,))


def test_reselect_and_choose_need_no_new_products():
  rng = np.random.default_rng(5)
  per_neuron = _block_sum(rng, 4, 3)
  loss = lambda p: per_neuron([p["w"][:, j] for j in range(4)])
  _, report = propose_partition(loss, {"w": jnp.ones((3, 4))}, KEY)
  assert mp.reselect(report, 1.0)["w"]["chosen"] == "per element"
  assert mp.reselect(report, 0.0, "max_block_ratio")["w"]["num_blocks"] in (4, 1)
  with pytest.raises(ValueError, match="criterion"):
    mp.choose(report["w"]["candidates"], 0.3, "nonsense")


def test_adam_mini_accepts_the_proposed_partition():
  from bigmodel_jax.optim import adam_mini

  rng = np.random.default_rng(6)
  per_head = [_block_sum(rng, 2, 4 * 4) for _ in range(2)]
  per_neuron = _block_sum(rng, 5, 6)

  def loss(p):
    q = p["layers"]["q"]
    heads = sum(f([q[i, :, :4], q[i, :, 4:]]) for i, f in enumerate(per_head))
    return heads + per_neuron([p["w"][:, j] for j in range(5)]) + jnp.sum(p["b"] ** 2)

  params = {"layers": {"q": jnp.ones((2, 4, 8))}, "w": jnp.ones((6, 5)), "b": jnp.ones(5)}
  partition, _ = propose_partition(loss, params, KEY, layer_axes={"layers": 0}, head_sizes=(4,))
  optimizer = adam_mini(1e-2, partition=partition)
  state = optimizer.init(params)
  nu = state[0].nu
  assert nu["layers"]["q"].shape == (2, 1, 2, 1)
  assert nu["w"].shape == (1, 5)
  assert nu["b"].shape == partition["b"].stat_shape((5,))
  grads = jax.grad(loss)(params)
  updates, _ = jax.jit(optimizer.update)(grads, state, params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))


def test_small_experiment_writes_its_outputs(tmp_path):
  from configs import measured_partition as config_file
  from experiments import measured_partition as experiment

  summary = experiment.run(config_file.get_config("small"), str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "summary.json", "partition_report_gpt.json",
               "partition_report_cnn.json", "gpt_leakage_step2.png", "gpt_pretrain_loss.png",
               "cnn_training.png"):
    assert os.path.exists(tmp_path / name), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["gpt"]["total"] == len(experiment.EXPECTED_GPT)
  assert 0 <= summary["gpt"]["matched"] <= summary["gpt"]["total"]
  assert set(summary["gpt"]["by_step"]) == {"0", "2"}
  reports = json.loads((tmp_path / "partition_report_gpt.json").read_text())
  assert reports["2"]["layers/attn/query/kernel"]["layer_axis"] == 0
  for method in ("adam_mini", "adamw"):
    assert summary["cnn"][method]["test_accuracy"]["ci95"] is not None
  assert (tmp_path / "metrics.jsonl").read_text().strip()


def test_shuffled_batches_resume_and_padded_batches_count_each_example_once():
  from bigmodel_jax.data.array_batches import ShuffledBatches, padded_batches
  from bigmodel_jax.train.classification import labelled

  x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
  it = ShuffledBatches(labelled(x, y), 4, seed=0)
  for _ in range(3):  # into the second epoch (2 batches per epoch)
    next(it)
  again = ShuffledBatches(labelled(x, y), 4, seed=0)
  again.set_state(json.loads(json.dumps(it.get_state())))
  np.testing.assert_array_equal(next(it)["targets"], next(again)["targets"])
  batches = padded_batches(labelled(x, y), 4)
  assert [b["weights"].sum() for b in batches] == [4, 4, 2]
  assert sorted(np.concatenate([b["targets"][b["weights"] > 0] for b in batches])) == list(y)


def test_the_factory_builds_adam_mini_with_a_saved_report(tmp_path):
  from bigmodel_jax.hessian.measured_partition import partition_of_report
  from bigmodel_jax.train.optimizers import make_optimizer, opt_with
  from configs import default

  rng = np.random.default_rng(8)
  per_neuron = _block_sum(rng, 5, 6)
  loss = lambda p: per_neuron([p["w"][:, j] for j in range(5)]) + jnp.sum(p["b"] ** 2)
  params = {"w": jnp.ones((6, 5)), "b": jnp.ones(5)}
  _, report = propose_partition(loss, params, KEY)
  path = tmp_path / "report.json"
  path.write_text(json.dumps(report))
  opt = opt_with(default.get_config("opt").opt, name="adam_mini", partition_report=str(path))
  optimizer, _ = make_optimizer(opt, 100)
  nu = optimizer.init(params)[1][0].nu
  assert nu["w"].shape == (1, 5)
  with pytest.raises(KeyError, match="no leaf 'v'"):
    partition_of_report(report)(("v",), None)
  with pytest.raises(ValueError, match="opt.partition_report"):
    make_optimizer(opt_with(opt, partition_report=str(tmp_path / "missing.json")), 100)
