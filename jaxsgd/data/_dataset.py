"""The `Dataset` every loader returns, and `check_dataset`, the one gate every data set passes.

A `Dataset` holds host numpy arrays:

  x_train [N, *input_shape] float32   y_train [N] int32 labels in [0, num_classes)  (classification)
  x_test  [M, *input_shape] float32           [N, num_outputs] float32              (regression)

`num_classes == 0` marks regression. `check_dataset` turns bad inputs (NaN, mismatched lengths,
labels out of range, ...) into a one-line `DataError` naming the field and the bad value, so a
sweep fails at load time instead of producing NaN losses an hour later.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class DataError(ValueError):
  """A data set, data file or data-set argument is malformed; the message names what and where."""


class Dataset(NamedTuple):
  """A supervised data set held as host numpy arrays (see the module docstring for shapes)."""

  x_train: np.ndarray  # [N, *input_shape] float32
  y_train: np.ndarray  # [N] int32 (classification) or [N, num_outputs] float32 (regression)
  x_test: np.ndarray  # [M, *input_shape] float32
  y_test: np.ndarray  # [M] int32 or [M, num_outputs] float32
  num_classes: int  # 0 means regression
  name: str
  outliers: dict | None = None  # injected outliers' positions (``transforms.inject_outliers``)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. `(40,)` or `(28, 28, 1)`."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    """Number of training examples N."""
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    """Number of test examples M."""
    return int(self.x_test.shape[0])

  @property
  def task(self) -> str:
    """"classification" when `num_classes > 0`, else "regression"."""
    return "classification" if self.num_classes > 0 else "regression"

  @property
  def num_outputs(self) -> int:
    """Model outputs needed: `num_classes` logits, or the regression target width."""
    return self.num_classes if self.num_classes > 0 else int(self.y_train.shape[1])

  def __repr__(self) -> str:
    return (
        f"Dataset(name={self.name!r}, task={self.task!r}, num_train={self.num_train}, "
        f"num_test={self.num_test}, input_shape={self.input_shape}, "
        f"num_outputs={self.num_outputs})"
    )


def _first_index(mask: np.ndarray) -> int | tuple[int, ...]:
  """Index of the first True entry of `mask`: an int for 1-D arrays, else a tuple."""
  index = tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))
  return index[0] if len(index) == 1 else index


def _as_numeric(field: str, value: Any, dtype: type) -> np.ndarray:
  """`value` as a numpy array of a real (bool, integer or floating) dtype, else DataError."""
  array = np.asarray(value)
  if array.dtype.kind not in "biuf":
    raise DataError(f"{field} has dtype {array.dtype}, which cannot be cast to {dtype.__name__}")
  return array


def _check_finite(field: str, array: np.ndarray) -> None:
  if array.dtype.kind != "f":
    return
  bad = ~np.isfinite(array)
  count = int(bad.sum())
  if count:
    raise DataError(
        f"{field} contains {count} non-finite values (NaN/inf), first at index {_first_index(bad)}"
    )


def _check_inputs(field: str, value: Any) -> np.ndarray:
  """x_* as float32 [N, *input_shape] with at least one example and all values finite."""
  array = _as_numeric(field, value, np.float32)
  if array.ndim < 2:
    raise DataError(
        f"{field} must have shape [N, *input_shape] (2 or more dimensions), got shape {array.shape}"
    )
  if array.shape[0] == 0:
    raise DataError(f"{field} is empty (0 examples)")
  # Cast first: float64 values beyond float32's range become inf and are caught here.
  with np.errstate(over="ignore"):
    array = array.astype(np.float32, copy=False)
  _check_finite(field, array)
  return array


def _check_labels(field: str, value: Any, num_classes: int) -> np.ndarray:
  """y_* for classification as int32 [N] with every label in [0, num_classes)."""
  array = _as_numeric(field, value, np.int32)
  if array.ndim != 1:
    raise DataError(f"{field} must hold one class label per example, shape [N]; got {array.shape}")
  _check_finite(field, array)
  if array.dtype.kind == "f":
    fractional = array != np.round(array)
    if fractional.any():
      index = _first_index(fractional)
      raise DataError(
          f"{field} must hold integer class labels, found {array[index]} at index {index}"
      )
  outside = (array < 0) | (array >= num_classes)
  if outside.any():
    index = _first_index(outside)
    raise DataError(
        f"{field} labels must lie in [0, {num_classes}), found {array[index]} at index {index} "
        f"({int(outside.sum())} labels out of range)"
    )
  return array.astype(np.int32, copy=False)


def _check_targets(field: str, value: Any) -> np.ndarray:
  """y_* for regression as float32 [N, num_outputs] with all values finite."""
  array = _as_numeric(field, value, np.float32)
  if array.ndim != 2:
    raise DataError(f"{field} must have shape [N, num_outputs] for regression, got {array.shape}")
  with np.errstate(over="ignore"):
    array = array.astype(np.float32, copy=False)
  _check_finite(field, array)
  return array


def check_dataset(ds: Dataset) -> Dataset:
  """Validates `ds` and returns it with x cast to float32 and y to int32 / float32.

  Raises:
    DataError: with a one-line message naming the field and the bad value, for: a negative or
      non-integer `num_classes`; a dtype that is not bool/integer/floating; x with fewer than 2
      dimensions or 0 examples; NaN/inf anywhere; x and y of different lengths; train and test
      input shapes that differ; labels that are fractional or outside [0, num_classes); regression
      targets not of shape [N, num_outputs] or with a different num_outputs for train and test.
  """
  num_classes = ds.num_classes
  if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
    raise DataError(f"num_classes must be an int (0 for regression), got {num_classes!r}")
  num_classes = int(num_classes)
  if num_classes < 0:
    raise DataError(f"num_classes must be >= 0 (0 for regression), got {num_classes}")
  if not isinstance(ds.name, str):
    raise DataError(f"name must be a str, got {ds.name!r}")

  x_train = _check_inputs("x_train", ds.x_train)
  x_test = _check_inputs("x_test", ds.x_test)
  if num_classes > 0:
    y_train = _check_labels("y_train", ds.y_train, num_classes)
    y_test = _check_labels("y_test", ds.y_test, num_classes)
  else:
    y_train = _check_targets("y_train", ds.y_train)
    y_test = _check_targets("y_test", ds.y_test)

  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if len(x) != len(y):
      raise DataError(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
        f"input shape mismatch: x_train examples have shape {x_train.shape[1:]} "
        f"but x_test examples have shape {x_test.shape[1:]}"
    )
  if num_classes == 0 and y_train.shape[1] != y_test.shape[1]:
    raise DataError(
        f"y_train has {y_train.shape[1]} regression outputs but y_test has {y_test.shape[1]}"
    )
  return Dataset(x_train, y_train, x_test, y_test, num_classes, ds.name, ds.outliers)


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    num_classes: int | None = None,
    name: str = "arrays",
) -> Dataset:
  """A checked `Dataset` from user-supplied arrays.

  Args:
    x_train, x_test: inputs [N, *input_shape] and [M, *input_shape], any real dtype.
    y_train, y_test: integer labels [N] / [M] (classification), or targets [N] or [N, K]
      (regression; 1-D targets become [N, 1]).
    num_classes: number of classes, or 0 for regression targets. When None: integer-typed 1-D
      labels mean classification with `max(y_train, y_test) + 1` classes; float targets are
      refused (say `num_classes=0` for regression, or give integer labels), so float labels
      never silently make a regression task.
    name: label carried by the data set.

  Raises:
    DataError: as `check_dataset`.
  """
  y_train, y_test = np.asarray(y_train), np.asarray(y_test)
  if num_classes is None:
    integer_labels = y_train.dtype.kind in "iu" and y_train.ndim == 1 and y_test.dtype.kind in "iu"
    if not integer_labels:
      raise DataError(
          f"y_train/y_test hold {y_train.dtype}/{y_test.dtype} values of shape "
          f"{y_train.shape[1:]}: pass num_classes=0 for regression targets, or integer class "
          "labels [N] (or num_classes=K) for classification")
    if y_train.size and y_test.size:
      # At least 1, so all-negative labels are reported as out of range, not read as regression.
      num_classes = max(int(max(y_train.max(), y_test.max())) + 1, 1)
    else:
      num_classes = 0
  if num_classes == 0:
    y_train = y_train.reshape(-1, 1) if y_train.ndim == 1 else y_train
    y_test = y_test.reshape(-1, 1) if y_test.ndim == 1 else y_test
  return check_dataset(Dataset(x_train, y_train, x_test, y_test, num_classes, name))
