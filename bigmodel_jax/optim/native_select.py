"""The exact k-th largest |x| of every row, as a native XLA FFI custom call on CPU.

XLA:CPU has no fast histogram: a scatter-add costs ~4 ns per entry and materialises index and
update arrays the size of the input, so the radix select of `topk_threshold` (two scatter
passes) costs more than the dense Adam update around it. `native/kth_largest.cc` runs the same
exact radix select (three counting passes into cache-resident histograms, on all cores) as an
XLA FFI handler; `topk_threshold.kth_largest_magnitude` uses it on CPU for blocks that are the
trailing axes of a float32 leaf, and the jnp radix select elsewhere (GPU, TPU, other blocks).

The library is compiled on first use with the C++ compiler ($CXX, default `c++`) against
jaxlib's FFI headers into ~/.cache/bigmodel_jax (or $XDG_CACHE_HOME), keyed by the source, the
jaxlib version and the compiler, and written atomically (parallel test workers may build it at
once). Without a compiler the jnp path runs, with a warning. `BIGMODEL_JAX_NATIVE=0` disables
the native path.
"""

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import jaxlib

TARGET = "bigmodel_kth_largest"
SOURCE = os.path.join(os.path.dirname(__file__), "native", "kth_largest.cc")
DISABLE_VARIABLE = "BIGMODEL_JAX_NATIVE"


def _cache_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "bigmodel_jax")


def build_library() -> str:
  """Compiles the kernel if this source, jaxlib and compiler have no library yet; its path.

  Raises:
    OSError: no compiler, or the cache directory is not writable.
    subprocess.CalledProcessError: the compiler failed (its stderr is in the exception).
  """
  compiler = os.environ.get("CXX", "c++")
  with open(SOURCE, "rb") as f:
    source = f.read()
  key = hashlib.sha256(source + jaxlib.__version__.encode() + compiler.encode()).hexdigest()
  directory = _cache_dir()
  path = os.path.join(directory, f"kth_largest_{key[:16]}.so")
  if os.path.exists(path):
    return path
  os.makedirs(directory, exist_ok=True)
  fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=directory)
  os.close(fd)
  try:
    subprocess.run([compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-pthread",
                    f"-I{jax.ffi.include_dir()}", SOURCE, "-o", partial],
                   check=True, capture_output=True, text=True)
    os.replace(partial, path)  # atomic: a concurrent builder never loads a half-written file
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


@functools.cache
def available() -> bool:
  """Whether the native kernel is built and registered with XLA for CPU (builds it once)."""
  if os.environ.get(DISABLE_VARIABLE, "1") == "0":
    return False
  try:
    library = ctypes.cdll.LoadLibrary(build_library())
  except (OSError, subprocess.CalledProcessError) as error:
    detail = getattr(error, "stderr", "") or error
    warnings.warn(f"bigmodel_jax: the native MoFO selection could not be built ({detail}); "
                  "the jnp radix select runs instead (slower on CPU)", stacklevel=2)
    return False
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.BigmodelKthLargest),
                              platform="cpu")
  return True


def kth_largest_magnitude_rows(x: jax.Array, k) -> jax.Array:
  """The exact k-th largest |x| of every row (CPU only; needs `available()`).

  Args:
    x: float32[rows, n].
    k: 1 <= k <= n, a Python int or an int32 scalar (may be traced).

  Returns:
    float32[rows].
  """
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(x.shape[:1], jnp.float32),
                          vmap_method="sequential")
  return call(x, jnp.asarray(k, jnp.int32))
