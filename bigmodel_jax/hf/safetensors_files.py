"""Reading and writing the safetensors files of a Hugging Face model directory.

A directory holds either one `model.safetensors` or shards listed by `model.safetensors.index.json`
({"weight_map": {tensor name: shard file}}). Tensors are read lazily with safetensors' `safe_open`
(memory-mapped; only the tensors asked for are read), and written shard by shard, so neither
direction holds more than one shard of the model in host memory.
"""

import json
import os
from collections.abc import Iterable, Iterator

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from bigmodel_jax.hf.config import HFCheckpointError, read_json_object

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _weight_map(directory: str) -> dict[str, str]:
  """Tensor name -> shard file name, from the index or from the single file's header."""
  index_path = os.path.join(directory, INDEX_FILE)
  if os.path.isfile(index_path):
    weight_map = read_json_object(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
      raise HFCheckpointError(f"{index_path}: no 'weight_map' object (tensor name -> file)")
    return dict(weight_map)
  single = os.path.join(directory, SINGLE_FILE)
  if not os.path.isfile(single):
    raise HFCheckpointError(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} exists")
  return dict.fromkeys(open_safetensors(single).keys(), SINGLE_FILE)


def open_safetensors(path: str):
  """safetensors' lazy (memory-mapped) handle of the file `path`.

  Raises:
    HFCheckpointError: naming `path`, for a damaged (truncated, overwritten) or unreadable file.
  """
  try:
    return safe_open(path, framework="numpy")
  except (SafetensorError, OSError) as e:
    raise HFCheckpointError(f"{path}: not a readable safetensors file ({e})") from e


class SafetensorsReader:
  """Lazy access to the tensors of a Hugging Face model directory.

  Attributes:
    directory: the model directory.
    weight_map: tensor name -> shard file name.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.weight_map = _weight_map(directory)
    self._files = {}

  def _file(self, shard: str, name: str):
    if shard not in self._files:
      path = os.path.join(self.directory, shard)
      if not os.path.isfile(path):
        raise HFCheckpointError(f"{path}: missing shard (it holds tensor {name!r})")
      handle = open_safetensors(path)
      self._files[shard] = (handle, set(handle.keys()))
    return self._files[shard]

  def path(self, name: str) -> str:
    """The file that holds tensor `name`."""
    return os.path.join(self.directory, self.weight_map.get(name, SINGLE_FILE))

  def shape(self, name: str) -> tuple[int, ...]:
    """The stored shape of tensor `name` (reads only the file header)."""
    if name not in self.weight_map:
      raise HFCheckpointError(f"{self.directory}: tensor {name!r} is missing "
                              f"(not in {INDEX_FILE} or {SINGLE_FILE})")
    shard = self.weight_map[name]
    f, names = self._file(shard, name)
    if name not in names:
      raise HFCheckpointError(f"{os.path.join(self.directory, shard)}: tensor {name!r} is "
                              "missing from the shard its index names")
    return tuple(f.get_slice(name).get_shape())

  def check_shape(self, name: str, expected: tuple[int, ...]) -> None:
    """Raises naming the file and tensor when `name` is not of shape `expected`."""
    found = self.shape(name)
    if found != tuple(expected):
      raise HFCheckpointError(f"{self.path(name)}: tensor {name!r} has shape {list(found)}, "
                              f"expected {list(expected)}")

  def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
    """Tensor `name`, or only its part `index`, as a numpy array (bfloat16: ml_dtypes')."""
    self.shape(name)
    handle = self._file(self.weight_map[name], name)[0]
    return handle.get_tensor(name) if index is None else handle.get_slice(name)[index]


def _shard_groups(tensors: Iterable[tuple[str, np.ndarray]], max_shard_bytes: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Groups consecutive tensors into dicts of at most max_shard_bytes (one tensor at least)."""
  group, size = {}, 0
  for name, array in tensors:
    if group and size + array.nbytes > max_shard_bytes:
      yield group
      group, size = {}, 0
    group[name] = array
    size += array.nbytes
  if group:
    yield group


def write_safetensors(directory: str, tensors: Iterable[tuple[str, np.ndarray]],
                      max_shard_bytes: int) -> list[str]:
  """Writes tensors as Hugging Face shards plus index (or one model.safetensors).

  Shards are first written under temporary names and renamed once their count is known
  ("model-00001-of-00003.safetensors"), so only one shard is held in memory at a time.

  Args:
    directory: the output directory (exists).
    tensors: (name, array) pairs, produced lazily.
    max_shard_bytes: the largest shard (a larger tensor gets a shard of its own).

  Returns:
    The written file names.
  """
  temporary, weight_map, total = [], {}, 0
  for i, group in enumerate(_shard_groups(tensors, max_shard_bytes)):
    name = f".shard-{i:05d}.tmp"
    safetensors.numpy.save_file(group, os.path.join(directory, name), metadata={"format": "pt"})
    temporary.append((name, list(group)))
    total += sum(a.nbytes for a in group.values())
  if len(temporary) == 1:
    os.replace(os.path.join(directory, temporary[0][0]), os.path.join(directory, SINGLE_FILE))
    return [SINGLE_FILE]
  files = []
  for i, (name, names) in enumerate(temporary):
    final = f"model-{i + 1:05d}-of-{len(temporary):05d}.safetensors"
    os.replace(os.path.join(directory, name), os.path.join(directory, final))
    weight_map.update({n: final for n in names})
    files.append(final)
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return [*files, INDEX_FILE]
