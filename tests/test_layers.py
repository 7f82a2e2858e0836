"""The package's layers point one way (DESIGN.md): blocks, losses, models, data -> sharding ->
optim, hessian, rl, hf -> train -> semi_open; experiments sit above all of them.

Checked twice: statically, every `import` in every module (function-level ones included) names
an earlier layer or its own (packages of one layer may import each other, never both ways); and
dynamically,
`python -c "import bigmodel_jax.X"` in a fresh interpreter loads no module of a later layer.
Below `train/` nothing reads a config (ml_collections)."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bigmodel_jax"
LAYERS = (
    ("blocks", "losses", "models", "data"),
    ("sharding",),
    ("optim", "hessian", "rl", "hf"),
    ("train",),
    ("semi_open",),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
TRAIN_LAYER = LAYER_OF["train"]


def _package_of(path: pathlib.Path) -> str:
  return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported_modules(path: pathlib.Path) -> set[str]:
  """Every module an import statement of `path` names, at any depth of the file."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      if node.module == "bigmodel_jax":  # from bigmodel_jax import sharding
        names.update(f"bigmodel_jax.{alias.name}" for alias in node.names)
  return names


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__")


def test_every_package_has_a_layer():
  packages = {_package_of(p) for p in _modules()}
  assert packages == set(LAYER_OF), f"give these packages a layer: {packages ^ set(LAYER_OF)}"


def test_imports_point_to_earlier_layers():
  wrong = []
  for path in _modules():
    package = _package_of(path)
    for module in _imported_modules(path):
      parts = module.split(".")
      if parts[0] != "bigmodel_jax" or len(parts) < 2 or parts[1] == package:
        continue
      if LAYER_OF[parts[1]] > LAYER_OF[package]:
        wrong.append(f"{path.relative_to(ROOT)} imports {module}")
  assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other():
  edges = set()
  for path in _modules():
    for module in _imported_modules(path):
      parts = module.split(".")
      if parts[0] == "bigmodel_jax" and len(parts) > 1 and parts[1] != _package_of(path):
        edges.add((_package_of(path), parts[1]))
  assert not {(a, b) for a, b in edges if (b, a) in edges}


def test_nothing_below_train_reads_a_config():
  readers = [str(p.relative_to(ROOT)) for p in _modules()
             if LAYER_OF[_package_of(p)] < TRAIN_LAYER
             and any(m.split(".")[0] == "ml_collections" for m in _imported_modules(p))]
  assert not readers


_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.split(".")[1] for m in sys.modules
                         if m.startswith("bigmodel_jax.") and m.count(".") >= 1})))
"""


@pytest.fixture(scope="module")
def loaded_packages() -> dict[str, list[str]]:
  """For each package, the packages `import bigmodel_jax.<package>` loads (fresh interpreters,
  started together)."""
  procs = {name: subprocess.Popen([sys.executable, "-c", _LOADED, f"bigmodel_jax.{name}"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin"})
           for name in LAYER_OF}
  loaded = {}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    loaded[name] = json.loads(out.strip().splitlines()[-1])
  return loaded


@pytest.mark.parametrize("package", sorted(LAYER_OF))
def test_importing_a_package_loads_no_later_layer(package, loaded_packages):
  later = [p for p in loaded_packages[package] if LAYER_OF[p] > LAYER_OF[package]]
  assert not later, f"import bigmodel_jax.{package} loads {later}"
