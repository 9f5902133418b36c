"""Transforms of a loaded data set, applied identically to its training and test inputs.

  standardize(dataset, mode)   inputs standardised with *training-set* statistics:
      "none"         as loaded (MNIST-1D's generator already standardises over the whole set)
      "global"       x ← (x − μ) / σ, one mean and standard deviation over all training inputs
      "per_feature"  x ← (x − μ_j) / σ_j per input feature j (each pixel, channel or position),
                     over the training examples; a constant feature (σ_j = 0) is only centred

The test set gets the training statistics, never its own (no test-set information leaks into
training). As a data option: ``data_options={"standardize": "per_feature"}`` or
``[data] standardize = "per_feature"`` for any data set.

  inject_outliers(dataset, mislabel, extreme_inputs, extreme_scale, seed)   unusual training
      examples at positions fixed by ``seed``: a fraction ``mislabel`` of the training labels
      replaced by a different class (uniform over the others), and ``extreme_inputs`` other
      training inputs multiplied by ``extreme_scale``. The test set is untouched. The positions,
      the original and new labels and the scale are kept in ``dataset.outliers`` (recorded in a
      sweep's provenance). As data options for any data set: ``mislabel``, ``extreme_inputs``,
      ``extreme_scale`` (default 10), ``outlier_seed`` (default 0); applied after
      ``standardize``, so the extreme inputs stay extreme on the standardised scale.
"""

from __future__ import annotations

import numpy as np

from jaxsgd.data._dataset import DataError, Dataset, check_dataset

STANDARDIZATIONS = ("none", "global", "per_feature")


def standardize(dataset: Dataset, mode: str = "per_feature") -> Dataset:
  """The data set with inputs standardised by ``mode`` (module docstring); float32 inputs."""
  if mode not in STANDARDIZATIONS:
    raise DataError(f"standardize: {mode!r} is not one of {', '.join(STANDARDIZATIONS)}")
  if mode == "none":
    return dataset
  x = np.asarray(dataset.x_train, np.float64)
  axis = None if mode == "global" else 0
  mean, std = x.mean(axis=axis), x.std(axis=axis)
  scale = np.where(std > 0, std, 1.0)

  def apply(inputs):
    return ((np.asarray(inputs, np.float64) - mean) / scale).astype(np.float32)

  return check_dataset(dataset._replace(x_train=apply(dataset.x_train),
                                        x_test=apply(dataset.x_test)))


def check_outlier_options(mislabel: float, extreme_inputs: int, extreme_scale: float,
                          seed: int) -> None:
  """``DataError`` naming the first bad outlier option (before any data is loaded)."""
  if isinstance(mislabel, bool) or not isinstance(mislabel, (int, float)) or not 0 <= mislabel < 1:
    raise DataError(f"mislabel: {mislabel!r} is not a fraction in [0, 1)")
  if (isinstance(extreme_inputs, bool) or not isinstance(extreme_inputs, (int, np.integer))
      or extreme_inputs < 0):
    raise DataError(f"extreme_inputs: {extreme_inputs!r} is not a non-negative integer")
  if (isinstance(extreme_scale, bool) or not isinstance(extreme_scale, (int, float))
      or not np.isfinite(extreme_scale) or extreme_scale <= 0):
    raise DataError(f"extreme_scale: {extreme_scale!r} is not a positive number")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise DataError(f"outlier_seed: {seed!r} is not an integer")


def inject_outliers(dataset: Dataset, mislabel: float = 0.0, extreme_inputs: int = 0,
                    extreme_scale: float = 10.0, seed: int = 0) -> Dataset:
  """The data set with outliers in its training set (module docstring); unchanged when there
  are none. ``DataError`` for a bad value, naming it."""
  check_outlier_options(mislabel, extreme_inputs, extreme_scale, seed)
  n = dataset.num_train
  wrong = int(round(mislabel * n))
  if wrong and dataset.num_classes < 2:
    raise DataError(f"mislabel: {mislabel!r} needs a classification data set; "
                    f"{dataset.name!r} has regression targets")
  if wrong + extreme_inputs > n:
    raise DataError(f"mislabel and extreme_inputs: {wrong} + {extreme_inputs} outliers exceed "
                    f"the {n} training examples")
  if not wrong and not extreme_inputs:
    return dataset
  rng = np.random.default_rng(seed)
  order = rng.permutation(n)
  mislabelled = np.sort(order[:wrong])
  extreme = np.sort(order[wrong:wrong + extreme_inputs])
  y = np.array(dataset.y_train, copy=True)
  original = y[mislabelled].copy()
  if wrong:  # a different class, uniform over the other num_classes - 1
    y[mislabelled] = (original + rng.integers(1, dataset.num_classes, wrong)) % dataset.num_classes
  x = np.array(dataset.x_train, copy=True)
  x[extreme] = x[extreme] * np.float32(extreme_scale)
  record = {"seed": int(seed), "mislabelled": mislabelled.tolist(),
            "original_labels": original.tolist(), "labels": y[mislabelled].tolist(),
            "extreme": extreme.tolist(), "extreme_scale": float(extreme_scale)}
  return check_dataset(dataset._replace(x_train=x, y_train=y, outliers=record))
