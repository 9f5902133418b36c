"""Data sets by name, so a sweep config can say `dataset="mnist1d", dataset_options={"seed": 1}`."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from jaxsgd.data import transforms
from jaxsgd.data._dataset import DataError, Dataset
from jaxsgd.data.transforms import STANDARDIZATIONS
from jaxsgd.data.builtin import digits, mnist1d
from jaxsgd.data.files import cifar10_binary, mnist_idx
from jaxsgd.data.synthetic import linear_regression, teacher_student

LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": mnist1d,
    "digits": digits,
    "linear_regression": linear_regression,
    "teacher_student": teacher_student,
    "mnist": mnist_idx,
    "cifar10": cifar10_binary,
}

DATASETS: tuple[str, ...] = tuple(LOADERS)


def load_dataset(name: str, standardize: str = "none", mislabel: float = 0.0,
                 extreme_inputs: int = 0, extreme_scale: float = 10.0, outlier_seed: int = 0,
                 **options: Any) -> Dataset:
  """Loads the data set registered as `name` (one of `DATASETS`).

  Args:
    name: "mnist1d", "digits", "linear_regression", "teacher_student", "mnist" (needs
      `path=` to the IDX files) or "cifar10" (needs `path=` to the binary batches).
    standardize: "none" (as loaded), "global" or "per_feature": inputs standardised with
      training-set statistics (`jaxsgd.data.transforms`), for any data set.
    mislabel, extreme_inputs, extreme_scale, outlier_seed: outliers injected into the training
      set after standardising (`jaxsgd.data.transforms.inject_outliers`), for any data set.
    **options: keyword arguments of that data set's loader, e.g. `num_samples=1000` for "mnist1d".

  Raises:
    DataError: for an unknown name (lists `DATASETS`), an option the loader does not take
      (names it and lists the accepted ones), a missing required option, or bad data.
  """
  try:
    loader = LOADERS[name]
  except (KeyError, TypeError):
    raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None
  parameters = inspect.signature(loader).parameters
  unknown = [option for option in options if option not in parameters]
  if unknown:
    raise DataError(
        f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
        f"its options: {', '.join(parameters) or '(none)'}"
    )
  missing = [
      p for p, parameter in parameters.items()
      if parameter.default is inspect.Parameter.empty and p not in options
  ]
  if missing:
    raise DataError(f"dataset {name!r} needs option {', '.join(f'{p}=' for p in missing)}")
  if standardize not in STANDARDIZATIONS:  # before loading anything
    raise DataError(f"standardize: {standardize!r} is not one of {', '.join(STANDARDIZATIONS)}")
  transforms.check_outlier_options(mislabel, extreme_inputs, extreme_scale, outlier_seed)
  dataset = transforms.standardize(loader(**options), standardize)
  return transforms.inject_outliers(dataset, mislabel, extreme_inputs, extreme_scale, outlier_seed)
