"""Transforms of a loaded data set, applied identically to its training and test inputs.

  standardize(dataset, mode)   inputs standardised with *training-set* statistics:
      "none"         as loaded (MNIST-1D's generator already standardises over the whole set)
      "global"       x ← (x − μ) / σ, one mean and standard deviation over all training inputs
      "per_feature"  x ← (x − μ_j) / σ_j per input feature j (each pixel, channel or position),
                     over the training examples; a constant feature (σ_j = 0) is only centred

The test set gets the training statistics, never its own (no test-set information leaks into
training). As a data option: ``data_options={"standardize": "per_feature"}`` or
``[data] standardize = "per_feature"`` for any data set.
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
