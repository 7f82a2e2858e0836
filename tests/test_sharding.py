"""The mesh and logical-axis sharding helpers."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from bigmodel_jax import sharding


def test_mesh_fills_the_minus_one_axis():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert sharding.data_parallel_size(mesh) == 4


@pytest.mark.parametrize("shape, match", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, "needs 3 devices"),
    ({"data": -1, "fsdp": -1}, "at most one"),
    ({"data": 8, "model": 1}, "unknown axes"),
])
def test_bad_mesh_shapes_are_errors(shape, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(shape)


def test_fit_spec_replicates_dimensions_that_do_not_divide():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert sharding.fit_spec(P("tensor", "fsdp"), (257, 64), mesh) == P(None, "fsdp")
  assert sharding.fit_spec(P(("data", "fsdp")), (6, 3), mesh) == P("data")
  assert sharding.fit_spec(P(), (4, 4), mesh) == P()
  assert jax.device_count() == 8
