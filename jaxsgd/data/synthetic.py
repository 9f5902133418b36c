"""Synthetic data sets with known ground truth: Gaussian linear regression and teacher-student.

Linear regression (the exactly solvable case of the gradient noise scale, see SCIENCE.md):

  x ~ N(0, S),  S = diag(s_1..s_d),  s_i = i^(-cov_decay)   (cov_decay = 0: S = I)
  w* ~ N(0, I/d),  y = x·w* + noise_std · ε,  ε ~ N(0, 1)

`linear_regression_truth` returns the exact population quantities (w*, S, noise_std) behind
`linear_regression` called with the same arguments.

Teacher-student: x ~ N(0, I_d) through a fixed random tanh MLP (the teacher); labels are the
argmax of its outputs (classification) or its single output (regression).

Randomness: one `np.random.SeedSequence(seed)` is split into independent streams for the
ground truth (w* / teacher weights), the training inputs and the test inputs, so `num_train`
does not change the test set and neither changes the ground truth. Generated sets are cached
on disk (see `_cache`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxsgd.data import _arguments, _cache
from jaxsgd.data._dataset import DataError, Dataset


class LinearRegressionTruth(NamedTuple):
  """Population of `linear_regression`: y = x·w_star + noise_std·ε, x ~ N(0, input_cov)."""

  w_star: np.ndarray  # [dim] float64
  input_cov: np.ndarray  # [dim, dim] float64, diagonal
  noise_std: float


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
  """Independent generators for (ground truth, training set, test set) from one integer seed."""
  truth, train, test = np.random.SeedSequence(seed).spawn(3)
  return np.random.default_rng(truth), np.random.default_rng(train), np.random.default_rng(test)


def _input_variances(dim: int, cov_decay: float) -> np.ndarray:
  """Eigenvalues s_i = i^(-cov_decay), i = 1..dim; [dim] float64."""
  return np.arange(1, dim + 1, dtype=np.float64) ** (-cov_decay)


def linear_regression_truth(
    dim: int = 16, noise_std: float = 0.5, cov_decay: float = 1.0, seed: int = 0
) -> LinearRegressionTruth:
  """The exact w* [dim], input covariance S [dim, dim] and noise_std used by `linear_regression`."""
  dim = _arguments.integer("dim", dim, 1)
  noise_std = _arguments.real("noise_std", noise_std, 0.0)
  cov_decay = _arguments.real("cov_decay", cov_decay, 0.0)
  seed = _arguments.integer("seed", seed, 0)
  truth_rng, _, _ = _streams(seed)
  w_star = truth_rng.normal(0.0, 1.0 / np.sqrt(dim), size=dim)
  return LinearRegressionTruth(w_star, np.diag(_input_variances(dim, cov_decay)), noise_std)


def _make_linear_regression(
    num_train: int, num_test: int, dim: int, noise_std: float, cov_decay: float, seed: int
) -> Dataset:
  truth = linear_regression_truth(dim, noise_std, cov_decay, seed)
  _, train_rng, test_rng = _streams(seed)
  scale = np.sqrt(np.diag(truth.input_cov))

  def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, dim)) * scale
    y = x @ truth.w_star + noise_std * rng.standard_normal(n)
    return x, y[:, None]

  x_train, y_train = sample(train_rng, num_train)
  x_test, y_test = sample(test_rng, num_test)
  return Dataset(x_train, y_train, x_test, y_test, 0, "linear_regression")


def linear_regression(
    num_train: int = 1024,
    num_test: int = 1024,
    dim: int = 16,
    noise_std: float = 0.5,
    cov_decay: float = 1.0,
    seed: int = 0,
    cache_dir: _cache.PathLike | None = None,
) -> Dataset:
  """Gaussian linear regression; x [N, dim] float32, y [N, 1] float32 (see module docstring).

  Args:
    num_train, num_test: numbers of examples.
    dim: input dimension d.
    noise_std: standard deviation σ of the additive label noise.
    cov_decay: input covariance eigenvalues s_i = i^(-cov_decay); 0 gives isotropic inputs.
    seed: integer seed; w* depends only on (dim, seed).
    cache_dir: cache folder; None means $JAXSGD_CACHE or ~/.cache/jaxsgd.
  """
  arguments = dict(
      num_train=_arguments.integer("num_train", num_train, 1),
      num_test=_arguments.integer("num_test", num_test, 1),
      dim=_arguments.integer("dim", dim, 1),
      noise_std=_arguments.real("noise_std", noise_std, 0.0),
      cov_decay=_arguments.real("cov_decay", cov_decay, 0.0),
      seed=_arguments.integer("seed", seed, 0),
  )
  return _cache.cached_dataset(
      "linear_regression", arguments, lambda: _make_linear_regression(**arguments), cache_dir
  )


def _teacher_weights(
    rng: np.random.Generator, dim: int, width: int, depth: int, num_outputs: int
) -> list[np.ndarray]:
  """Teacher weights, entries N(0, 1/fan_in), no biases.

  Shapes [dim, width], [width, width] x (depth - 1), [width, num_outputs]; with depth 0, the
  single linear map [dim, num_outputs].
  """
  sizes = [dim] + [width] * depth + [num_outputs]
  return [rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, n)) for m, n in zip(sizes[:-1], sizes[1:])]


def _teacher_outputs(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
  """Teacher MLP outputs [N, num_outputs] for inputs x [N, dim]: tanh hidden layers, linear head."""
  h = x
  for w in weights[:-1]:
    h = np.tanh(h @ w)
  return h @ weights[-1]


def _make_teacher_student(
    num_train: int,
    num_test: int,
    dim: int,
    teacher_width: int,
    teacher_depth: int,
    num_classes: int,
    noise_std: float,
    seed: int,
) -> Dataset:
  teacher_rng, train_rng, test_rng = _streams(seed)
  weights = _teacher_weights(teacher_rng, dim, teacher_width, teacher_depth, num_classes or 1)

  def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, dim))
    outputs = _teacher_outputs(weights, x)
    outputs = outputs + noise_std * rng.standard_normal(outputs.shape)
    return x, (np.argmax(outputs, axis=1) if num_classes else outputs)

  x_train, y_train = sample(train_rng, num_train)
  x_test, y_test = sample(test_rng, num_test)
  return Dataset(x_train, y_train, x_test, y_test, num_classes, "teacher_student")


def teacher_student(
    num_train: int = 4096,
    num_test: int = 1024,
    dim: int = 32,
    teacher_width: int = 64,
    teacher_depth: int = 2,
    num_classes: int = 10,
    noise_std: float = 0.0,
    seed: int = 0,
    cache_dir: _cache.PathLike | None = None,
) -> Dataset:
  """Inputs x ~ N(0, I) [N, dim] float32 labelled by a random tanh MLP teacher.

  Args:
    num_train, num_test: numbers of examples.
    dim: input dimension.
    teacher_width: hidden width of the teacher.
    teacher_depth: number of tanh hidden layers (0: a linear teacher).
    num_classes: >= 2: y [N] int32 = argmax of the teacher's num_classes outputs plus noise;
      0: regression, y [N, 1] float32 = the teacher's single output plus noise.
    noise_std: standard deviation of Gaussian noise added to the teacher outputs (before the
      argmax for classification, so it flips labels near decision boundaries).
    seed: integer seed; the teacher depends only on (dim, width, depth, num_classes, seed).
    cache_dir: cache folder; None means $JAXSGD_CACHE or ~/.cache/jaxsgd.
  """
  arguments = dict(
      num_train=_arguments.integer("num_train", num_train, 1),
      num_test=_arguments.integer("num_test", num_test, 1),
      dim=_arguments.integer("dim", dim, 1),
      teacher_width=_arguments.integer("teacher_width", teacher_width, 1),
      teacher_depth=_arguments.integer("teacher_depth", teacher_depth, 0),
      num_classes=_arguments.integer("num_classes", num_classes, 0),
      noise_std=_arguments.real("noise_std", noise_std, 0.0),
      seed=_arguments.integer("seed", seed, 0),
  )
  if arguments["num_classes"] == 1:
    raise DataError("num_classes must be 0 (regression) or >= 2, got 1")
  return _cache.cached_dataset(
      "teacher_student", arguments, lambda: _make_teacher_student(**arguments), cache_dir
  )
