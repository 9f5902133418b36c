"""Small real data sets that need no download: MNIST-1D (generated) and scikit-learn's digits.

  mnist1d: x [N, 40] float32 (standardised over the whole set), y [N] int32, 10 classes.
  digits:  x [N, 64] float32 (8x8 images flattened, pixel intensity / 16 in [0, 1]), y [N] int32,
           10 classes, 1797 examples in all.

The third-party packages are imported inside the functions, so `import jaxsgd.data` stays fast.
"""

from __future__ import annotations

import importlib.metadata
import random

import numpy as np

from jaxsgd.data import _arguments, _cache
from jaxsgd.data._dataset import DataError, Dataset, check_dataset


def _make_mnist1d(num_samples: int, train_split: float, seed: int) -> Dataset:
  """Runs mnist1d's generator, restoring the global `random` / `np.random` states it reseeds."""
  import mnist1d.data

  args = mnist1d.data.get_dataset_args()  # an ObjectView; make_dataset reads attributes
  args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
  numpy_state, python_state = np.random.get_state(), random.getstate()
  try:
    data = mnist1d.data.make_dataset(args)
  finally:
    np.random.set_state(numpy_state)
    random.setstate(python_state)
  return Dataset(data["x"], data["y"], data["x_test"], data["y_test"], 10, "mnist1d")


def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    cache_dir: _cache.PathLike | None = None,
) -> Dataset:
  """MNIST-1D (Greydanus 2020): 1-D signals of length 40 built from 10 digit templates.

  Generated locally with `mnist1d.data.make_dataset` (never downloaded); the defaults match the
  published data set's arguments. Training set: the first int(num_samples * train_split)
  examples, test set: the rest. The generator seeds numpy's and Python's global RNGs; this
  function puts both states back as they were.

  Args:
    num_samples: total examples, a multiple of 10 (the generator makes num_samples // 10 per
      class, so other values would silently give fewer examples).
    train_split: fraction of the examples in the training set, in (0, 1).
    seed: generator seed.
    cache_dir: cache folder; None means $JAXSGD_CACHE or ~/.cache/jaxsgd.
  """
  num_samples = _arguments.integer("num_samples", num_samples, 10)
  if num_samples % 10:
    raise DataError(f"num_samples must be a multiple of 10 (the 10 classes), got {num_samples}")
  arguments = dict(
      num_samples=num_samples,
      train_split=_arguments.real(
          "train_split", train_split, 0.0, 1.0, open_low=True, open_high=True
      ),
      seed=_arguments.integer("seed", seed, 0),
      # The generator's output may change between package versions; keep their caches apart.
      mnist1d_version=importlib.metadata.version("mnist1d"),
  )
  return _cache.cached_dataset(
      "mnist1d",
      arguments,
      lambda: _make_mnist1d(num_samples, arguments["train_split"], arguments["seed"]),
      cache_dir,
  )


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 examples), randomly split into train and test.

  Args:
    test_fraction: fraction of examples in the test set, in (0, 1); the test set holds
      round(1797 * test_fraction) examples.
    seed: seed of the split permutation; the same seed always gives the same split.
  """
  from sklearn.datasets import load_digits

  test_fraction = _arguments.real(
      "test_fraction", test_fraction, 0.0, 1.0, open_low=True, open_high=True
  )
  seed = _arguments.integer("seed", seed, 0)
  bunch = load_digits()
  x, y = bunch.data / 16.0, bunch.target
  order = np.random.default_rng(seed).permutation(len(y))
  num_test = int(round(len(y) * test_fraction))
  test, train = order[:num_test], order[num_test:]
  return check_dataset(Dataset(x[train], y[train], x[test], y[test], 10, "digits"))
