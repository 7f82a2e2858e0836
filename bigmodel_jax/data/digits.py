"""scikit-learn's handwritten digits (1797 8x8 grey images, 10 classes) as arrays.

The data set ships inside scikit-learn, so it needs no download; it is the real image data of
the block-Hessian comparison (CNN and MLP against a Transformer).
"""

import numpy as np


def load_digits(split: str, test_fraction: float = 0.2, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
  """One split of the digits, with a deterministic shuffled train/test split.

  Args:
    split: "train" or "test".
    test_fraction: fraction of the 1797 images in "test".
    seed: seed of the permutation that defines the split.

  Returns:
    (images float32[n, 8, 8, 1] scaled to [0, 1], labels int32[n]).
  """
  if split not in ("train", "test"):
    raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
  from sklearn import datasets  # optional dependency: scikit-learn

  data = datasets.load_digits()
  order = np.random.default_rng(seed).permutation(len(data.target))
  num_test = round(test_fraction * len(order))
  rows = order[:num_test] if split == "test" else order[num_test:]
  images = (data.images[rows] / 16.0).astype(np.float32)[..., None]
  return images, data.target[rows].astype(np.int32)


def digits_splits(seed: int = 0, validation_fraction: float = 0.0
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The train and test splits, and a validation split taken from the train split.

  Args:
    seed: seed of the train/test split and of the validation rows.
    validation_fraction: fraction of the train split held out as "validation" (0: none).

  Returns:
    {"train": (images, labels), "test": ..., and "validation": ... when the fraction is > 0}.
  """
  x, y = load_digits("train", seed=seed)
  splits = {"test": load_digits("test", seed=seed)}
  order = np.random.default_rng(seed).permutation(len(y))
  num_val = round(validation_fraction * len(y))
  if num_val:
    splits["validation"] = (x[order[:num_val]], y[order[:num_val]])
  splits["train"] = (x[order[num_val:]], y[order[num_val:]])
  return splits
