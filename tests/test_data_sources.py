"""Named TFDS datasets that are not prepared for random access: the error says how to prepare
them (the `tfds build` command, its file format and data_dir)."""

import pytest

from bigmodel_jax import data


@pytest.mark.parametrize(("name", "tfds_name"), [("tiny_shakespeare", "tiny_shakespeare"),
                                                 ("lm1b", "lm1b"), ("c4", "c4/en")])
def test_an_unprepared_dataset_names_the_command_that_prepares_it(name, tfds_name, tmp_path):
  with pytest.raises(ValueError) as error:
    data.load_source(name, data_dir=str(tmp_path), split="validation")
  message = str(error.value)
  assert f"data.name {name!r}" in message and f"is not prepared in {tmp_path}" in message
  assert (f"tfds build {tfds_name} --file_format=array_record --data_dir={tmp_path}"
          in message)
  assert f"--config.data.data_dir={tmp_path}" in message


def test_the_default_data_dir_is_named_in_the_command(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # an empty default, whatever the machine
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(ValueError, match=r"--file_format=array_record --data_dir=\S+\nthen run "
                     r"again$"):
    data.load_source("tiny_shakespeare", data_dir=None, split="train")
