"""config.json and summary.json: complete JSON, written atomically."""

import json
import os

import ml_collections
import pytest

from bigmodel_jax.train import outputs


def test_config_and_summary_round_trip(tmp_path):
  workdir = os.path.join(tmp_path, "run")
  config = ml_collections.ConfigDict({"opt": {"name": "mofo", "fraction": 0.1}})
  outputs.write_config(config, workdir)
  outputs.write_summary({"final_loss": 1.5}, workdir)
  outputs.write_summary({"final_loss": 1.25}, workdir)  # rewritten in place
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f) == {"opt": {"name": "mofo", "fraction": 0.1}}
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == {"final_loss": 1.25}
  assert sorted(os.listdir(workdir)) == ["config.json", "summary.json"]  # no temporary left


def test_unserialisable_summary_keeps_the_previous_file(tmp_path):
  outputs.write_summary({"step": 1}, str(tmp_path))
  with pytest.raises(TypeError):
    outputs.write_summary({"step": object()}, str(tmp_path))
  with open(os.path.join(tmp_path, "summary.json")) as f:
    assert json.load(f) == {"step": 1}
  assert os.listdir(tmp_path) == ["summary.json"]
