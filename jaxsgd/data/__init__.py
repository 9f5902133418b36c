"""Data sets as host numpy arrays, checked once at load time.

  load_dataset(name, **options) -> Dataset   by name; names in DATASETS
  Dataset(x_train, y_train, x_test, y_test, num_classes, name)
      x [N, *input_shape] float32; y [N] int32 labels (num_classes > 0) or [N, K] float32 targets

Modules:
  _dataset   Dataset, DataError, check_dataset, from_arrays
  synthetic  linear_regression (+ its exact ground truth), teacher_student
  builtin    mnist1d (generated locally), digits (scikit-learn)
  files      MNIST IDX and CIFAR-10 binary readers (numpy only, no pickle)
  registry   load_dataset, DATASETS
  transforms standardize (none, global, per_feature) with training-set statistics
  _cache     on-disk .npz cache of generated sets ($JAXSGD_CACHE, default ~/.cache/jaxsgd)
"""

from jaxsgd.data._dataset import DataError, Dataset, check_dataset, from_arrays
from jaxsgd.data.builtin import digits, mnist1d
from jaxsgd.data.files import cifar10_binary, mnist_idx, read_idx
from jaxsgd.data.registry import DATASETS, load_dataset
from jaxsgd.data.transforms import STANDARDIZATIONS, standardize
from jaxsgd.data.synthetic import (
    LinearRegressionTruth,
    linear_regression,
    linear_regression_truth,
    teacher_student,
)

__all__ = [
    "DATASETS",
    "DataError",
    "STANDARDIZATIONS",
    "Dataset",
    "LinearRegressionTruth",
    "check_dataset",
    "cifar10_binary",
    "digits",
    "from_arrays",
    "linear_regression",
    "linear_regression_truth",
    "load_dataset",
    "mnist1d",
    "mnist_idx",
    "standardize",
    "read_idx",
    "teacher_student",
]
