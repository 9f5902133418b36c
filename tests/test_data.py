"""Tests for jaxsgd.data: file readers, generators and their ground truth, caching, validation."""

from __future__ import annotations

import gzip
import os
import pickle
import random

import numpy as np
import pytest

import jaxsgd.data as data
from jaxsgd.data import DataError, Dataset
from jaxsgd.data import builtin, synthetic


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  """Every test caches under its own temporary folder, never in ~/.cache."""
  cache = tmp_path / "default_cache"
  monkeypatch.setenv("JAXSGD_CACHE", str(cache))
  return cache


# --------------------------------------------------------------------------------------------- IDX


def write_idx(file, array: np.ndarray, code: int = 0x08) -> None:
  """Writes `array` as an IDX file (big-endian), gzipped if the name ends in .gz."""
  dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
  payload = header + np.asarray(array, dtype=dtype).tobytes()
  opener = gzip.open if str(file).endswith(".gz") else open
  with opener(file, "wb") as f:
    f.write(payload)


def mnist_arrays():
  """5 train and 3 test 28x28 uint8 images with distinct known pixels, and labels."""
  pixels = np.arange(8 * 28 * 28, dtype=np.int64).reshape(8, 28, 28)
  images = ((pixels * 7 + pixels // 28) % 256).astype(np.uint8)
  images[0] = 255  # an all-white image must read as exactly 1.0
  labels = np.array([3, 0, 9, 1, 4, 7, 2, 5], dtype=np.uint8)
  return images[:5], labels[:5], images[5:], labels[5:]


def write_mnist(folder, gzip_file: str | None = None):
  x_train, y_train, x_test, y_test = mnist_arrays()
  files = {
      "train-images-idx3-ubyte": x_train,
      "train-labels-idx1-ubyte": y_train,
      "t10k-images-idx3-ubyte": x_test,
      "t10k-labels-idx1-ubyte": y_test,
  }
  for stem, array in files.items():
    write_idx(folder / (stem + (".gz" if stem == gzip_file else "")), array)


@pytest.mark.parametrize("gzip_file", [None, "train-images-idx3-ubyte"])
def test_mnist_idx_reads_pixels_and_labels_exactly(tmp_path, gzip_file):
  write_mnist(tmp_path, gzip_file)
  ds = data.mnist_idx(tmp_path)
  x_train, y_train, x_test, y_test = mnist_arrays()
  assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.x_train[..., 0], x_train.astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.x_test[..., 0], x_test.astype(np.float32) / 255)
  assert np.all(ds.x_train[0] == 1.0)
  np.testing.assert_array_equal(ds.y_train, y_train)
  np.testing.assert_array_equal(ds.y_test, y_test)
  assert (ds.num_classes, ds.name, ds.input_shape) == (10, "mnist", (28, 28, 1))


def test_mnist_via_load_dataset(tmp_path):
  write_mnist(tmp_path)
  np.testing.assert_array_equal(
      data.load_dataset("mnist", path=str(tmp_path)).y_test, mnist_arrays()[3]
  )


def test_read_idx_generic_dtypes_roundtrip(tmp_path):
  values = np.array([[-300, 2], [32767, -32768]], dtype=np.int16)
  write_idx(tmp_path / "a.idx", values, code=0x0B)
  read = data.read_idx(tmp_path / "a.idx")
  np.testing.assert_array_equal(read, values)
  assert read.dtype == np.int16 and read.dtype.isnative


def test_idx_bad_magic_names_the_file(tmp_path):
  write_mnist(tmp_path)
  file = tmp_path / "t10k-labels-idx1-ubyte"
  raw = bytearray(file.read_bytes())
  raw[0] = 0x1F
  file.write_bytes(bytes(raw))
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*magic"):
    data.mnist_idx(tmp_path)


def test_idx_size_mismatch_names_the_file(tmp_path):
  write_mnist(tmp_path)
  file = tmp_path / "train-images-idx3-ubyte"
  file.write_bytes(file.read_bytes()[:-1])
  with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*3919 data bytes"):
    data.mnist_idx(tmp_path)


def test_idx_missing_file_is_named(tmp_path):
  write_mnist(tmp_path)
  os.remove(tmp_path / "t10k-images-idx3-ubyte")
  with pytest.raises(DataError, match="not found.*t10k-images-idx3-ubyte"):
    data.mnist_idx(tmp_path)


def test_idx_image_label_count_mismatch(tmp_path):
  write_mnist(tmp_path)
  write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
  with pytest.raises(DataError, match="5 images.*train-labels-idx1-ubyte has 4 labels"):
    data.mnist_idx(tmp_path)


# ---------------------------------------------------------------------------------------- CIFAR-10


def cifar_pixel(c, h, w, record):
  """Known pixel value of channel c at row h, column w of record number `record`."""
  return (record * 31 + c * 85 + h * 5 + w * 3) % 256


def cifar_records(first_record: int, labels) -> np.ndarray:
  """Records [n, 3073] uint8: label byte then the R, G, B planes (each 32x32, row-major)."""
  records = []
  for i, label in enumerate(labels):
    planes = np.fromfunction(
        lambda c, h, w, r=first_record + i: cifar_pixel(c, h, w, r), (3, 32, 32), dtype=np.int64
    )
    records.append(np.concatenate([[label], planes.reshape(-1)]).astype(np.uint8))
  return np.stack(records)


def write_cifar(folder):
  folder.mkdir(parents=True, exist_ok=True)
  batch1 = cifar_records(0, [0, 1, 2, 3])
  batch1[2, 1:] = np.concatenate([np.full(1024, 255), np.zeros(2048)])  # pure red image
  cifar_records(4, [4, 5, 6, 7]).tofile(folder / "data_batch_2.bin")
  batch1.tofile(folder / "data_batch_1.bin")
  cifar_records(8, [9, 8, 7, 6]).tofile(folder / "test_batch.bin")


def test_cifar10_binary_layout_and_labels(tmp_path):
  write_cifar(tmp_path)
  ds = data.cifar10_binary(tmp_path)
  assert ds.x_train.shape == (8, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.y_train, [0, 1, 2, 3, 4, 5, 6, 7])
  np.testing.assert_array_equal(ds.y_test, [9, 8, 7, 6])
  red = ds.x_train[2]
  assert np.all(red[..., 0] == 1.0) and np.all(red[..., 1:] == 0.0)
  # Record 5 (second record of data_batch_2) pixel by pixel, channels last.
  h, w, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
  expected = cifar_pixel(c, h, w, 5).astype(np.float32) / 255
  np.testing.assert_array_equal(ds.x_train[5], expected)
  np.testing.assert_array_equal(ds.x_test[0], cifar_pixel(c, h, w, 8).astype(np.float32) / 255)
  assert (ds.num_classes, ds.name) == (10, "cifar10")


def test_cifar10_finds_extracted_subfolder_and_never_unpickles(tmp_path, monkeypatch):
  write_cifar(tmp_path / "cifar-10-batches-bin")

  def forbidden(*args, **kwargs):
    raise AssertionError("CIFAR reader must not unpickle or np.load anything")

  for module, attribute in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                            (np, "load")]:
    monkeypatch.setattr(module, attribute, forbidden)
  ds = data.load_dataset("cifar10", path=tmp_path)
  assert ds.num_train == 8 and ds.num_test == 4


def test_cifar10_truncated_file_names_it(tmp_path):
  write_cifar(tmp_path)
  file = tmp_path / "data_batch_2.bin"
  file.write_bytes(file.read_bytes()[:-10])
  with pytest.raises(DataError, match=r"data_batch_2\.bin holds 12282 bytes.*3073"):
    data.cifar10_binary(tmp_path)


def test_cifar10_missing_files(tmp_path):
  write_cifar(tmp_path)
  os.rename(tmp_path / "data_batch_2.bin", tmp_path / "data_batch_3.bin")
  with pytest.raises(DataError, match=r"data_batch_2\.bin"):
    data.cifar10_binary(tmp_path)
  os.remove(tmp_path / "test_batch.bin")
  os.rename(tmp_path / "data_batch_3.bin", tmp_path / "data_batch_2.bin")
  with pytest.raises(DataError, match=r"test_batch\.bin"):
    data.cifar10_binary(tmp_path)


# ------------------------------------------------------------------------------- linear regression


def test_linear_regression_matches_its_population_truth(tmp_path):
  kwargs = dict(dim=4, noise_std=0.5, cov_decay=1.0, seed=3)
  ds = data.linear_regression(num_train=200_000, num_test=8, cache_dir=tmp_path, **kwargs)
  truth = data.linear_regression_truth(**kwargs)
  assert ds.x_train.shape == (200_000, 4) and ds.y_train.shape == (200_000, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.float32
  assert ds.num_classes == 0 and ds.task == "regression" and ds.num_outputs == 1
  np.testing.assert_allclose(np.diag(truth.input_cov), [1, 1 / 2, 1 / 3, 1 / 4])
  x, y = ds.x_train.astype(np.float64), ds.y_train[:, 0].astype(np.float64)
  np.testing.assert_allclose(x.T @ x / len(x), truth.input_cov, atol=0.015)
  w, *_ = np.linalg.lstsq(x, y, rcond=None)
  np.testing.assert_allclose(w, truth.w_star, atol=0.01)
  assert abs(np.std(y - x @ w) - 0.5) < 0.005
  assert truth.noise_std == 0.5 and truth.w_star.dtype == np.float64


def test_linear_regression_isotropic_and_split_independence(tmp_path):
  truth = data.linear_regression_truth(dim=3, cov_decay=0.0)
  np.testing.assert_array_equal(truth.input_cov, np.eye(3))
  small = data.linear_regression(num_train=10, num_test=20, dim=3, cache_dir=tmp_path)
  large = data.linear_regression(num_train=50, num_test=20, dim=3, cache_dir=tmp_path)
  np.testing.assert_array_equal(small.x_test, large.x_test)  # test set ignores num_train
  np.testing.assert_array_equal(small.x_train, large.x_train[:10])
  assert not np.array_equal(small.x_train, small.x_test[:10])  # independent draws
  other_seed = data.linear_regression(num_train=10, num_test=20, dim=3, seed=1, cache_dir=tmp_path)
  assert not np.array_equal(small.x_train, other_seed.x_train)


# --------------------------------------------------------------------------------- teacher-student


def test_teacher_student_classification(tmp_path):
  ds = data.teacher_student(num_train=2000, num_test=500, dim=8, num_classes=4, cache_dir=tmp_path)
  assert ds.x_train.shape == (2000, 8) and ds.y_train.shape == (2000,)
  assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) <= {0, 1, 2, 3}
  assert len(np.unique(ds.y_train)) == 4
  # Labels are a function of x: a nearest-neighbour rule on the training set beats chance easily.
  distances = ((ds.x_test[:, None, :] - ds.x_train[None, :, :]) ** 2).sum(-1)
  accuracy = np.mean(ds.y_train[np.argmin(distances, axis=1)] == ds.y_test)
  assert accuracy > 0.5


def test_teacher_student_linear_teacher_regression_is_exact(tmp_path):
  common = dict(num_train=500, num_test=100, dim=6, teacher_depth=0, num_classes=0,
                cache_dir=tmp_path)
  clean = data.teacher_student(noise_std=0.0, **common)
  noisy = data.teacher_student(noise_std=0.3, **common)
  assert clean.y_train.shape == (500, 1) and clean.num_outputs == 1
  for ds, residual_std in ((clean, 0.0), (noisy, 0.3)):
    x, y = ds.x_train.astype(np.float64), ds.y_train[:, 0].astype(np.float64)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert abs(np.std(y - x @ w) - residual_std) < 0.03
  np.testing.assert_array_equal(clean.x_train, noisy.x_train)


def test_teacher_student_rejects_one_class():
  with pytest.raises(DataError, match="num_classes"):
    data.teacher_student(num_classes=1)


# ----------------------------------------------------------------------------------------- caching


class CountingGenerator:

  def __init__(self, generate):
    self.generate, self.calls = generate, 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.generate(*args, **kwargs)


def test_cache_hit_skips_generator_and_returns_identical_arrays(tmp_path, monkeypatch):
  counter = CountingGenerator(synthetic._make_linear_regression)
  monkeypatch.setattr(synthetic, "_make_linear_regression", counter)
  first = data.linear_regression(num_train=64, num_test=32, dim=5, cache_dir=tmp_path)
  second = data.linear_regression(num_train=64, num_test=32, dim=5, cache_dir=tmp_path)
  assert counter.calls == 1
  for a, b in zip(first[:4], second[:4]):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  assert (first.num_classes, first.name) == (second.num_classes, second.name)
  (file,) = os.listdir(tmp_path)  # one file, no temporary left behind
  assert file.startswith("linear_regression-") and file.endswith(".npz")
  with np.load(tmp_path / file, allow_pickle=False) as f:
    np.testing.assert_array_equal(f["x_train"], first.x_train)

  data.linear_regression(num_train=64, num_test=32, dim=5, noise_std=0.1, cache_dir=tmp_path)
  assert counter.calls == 2 and len(os.listdir(tmp_path)) == 2
  # Equal values of another numeric type are the same arguments.
  data.linear_regression(num_train=np.int64(64), num_test=32, dim=5, noise_std=1 / 2,
                         cache_dir=tmp_path)
  assert counter.calls == 2


def test_cache_default_dir_from_environment(_cache_in_tmp, monkeypatch):
  counter = CountingGenerator(synthetic._make_teacher_student)
  monkeypatch.setattr(synthetic, "_make_teacher_student", counter)
  first = data.load_dataset("teacher_student", num_train=16, num_test=8, dim=3)
  assert [f.startswith("teacher_student-") for f in os.listdir(_cache_in_tmp)] == [True]
  second = data.teacher_student(num_train=16, num_test=8, dim=3)
  assert counter.calls == 1
  np.testing.assert_array_equal(first.y_train, second.y_train)


def test_corrupt_cache_file_is_regenerated(tmp_path, monkeypatch):
  counter = CountingGenerator(synthetic._make_linear_regression)
  monkeypatch.setattr(synthetic, "_make_linear_regression", counter)
  first = data.linear_regression(num_train=8, num_test=8, dim=2, cache_dir=tmp_path)
  (file,) = os.listdir(tmp_path)
  (tmp_path / file).write_bytes(b"not a zip file")
  second = data.linear_regression(num_train=8, num_test=8, dim=2, cache_dir=tmp_path)
  assert counter.calls == 2
  np.testing.assert_array_equal(first.x_train, second.x_train)


# ---------------------------------------------------------------------------------- mnist1d, digits


def test_mnist1d_small(tmp_path, monkeypatch):
  counter = CountingGenerator(builtin._make_mnist1d)
  monkeypatch.setattr(builtin, "_make_mnist1d", counter)
  np.random.seed(1234)
  random.seed(1234)
  numpy_state, python_state = np.random.get_state(), random.getstate()

  ds = data.mnist1d(num_samples=500, cache_dir=tmp_path / "a")
  after = np.random.get_state()
  assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])
  assert after[2:] == numpy_state[2:]
  assert random.getstate() == python_state

  assert ds.x_train.shape == (400, 40) and ds.x_test.shape == (100, 40)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10 and ds.task == "classification"
  np.testing.assert_array_equal(np.bincount(np.concatenate([ds.y_train, ds.y_test])), [50] * 10)

  again = data.mnist1d(num_samples=500, cache_dir=tmp_path / "b")  # fresh cache: regenerated
  assert counter.calls == 2
  np.testing.assert_array_equal(ds.x_train, again.x_train)
  np.testing.assert_array_equal(ds.y_test, again.y_test)

  other = data.mnist1d(num_samples=500, train_split=0.5, seed=7, cache_dir=tmp_path / "a")
  assert other.num_train == 250 and not np.array_equal(other.y_train[:100], ds.y_train[:100])


def test_mnist1d_rejects_sample_count_not_multiple_of_classes():
  with pytest.raises(DataError, match="multiple of 10"):
    data.mnist1d(num_samples=505)


def test_digits_split():
  ds = data.digits()
  assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  x = np.concatenate([ds.x_train, ds.x_test])
  assert x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_array_equal(x * 16, np.round(x * 16))  # intensities 0..16, divided by 16
  again, other = data.digits(), data.digits(seed=1)
  np.testing.assert_array_equal(ds.x_train, again.x_train)
  np.testing.assert_array_equal(ds.y_test, again.y_test)
  assert not np.array_equal(ds.y_test, other.y_test)
  np.testing.assert_allclose(x.sum(), np.concatenate([other.x_train, other.x_test]).sum())


# ----------------------------------------------------------------------- check_dataset, from_arrays


def classification_arrays(n_train=6, n_test=4):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(n_train, 3)), np.arange(n_train) % 3,
          rng.normal(size=(n_test, 3)), np.arange(n_test) % 3)


def test_check_dataset_casts_dtypes():
  x_train, y_train, x_test, y_test = classification_arrays()
  ds = data.check_dataset(Dataset(x_train, y_train.astype(np.int64), x_test, y_test, 3, "t"))
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.input_shape == (3,) and ds.num_train == 6 and ds.num_test == 4 and ds.num_outputs == 3


def test_nan_in_x_train_is_located():
  x_train, y_train, x_test, y_test = classification_arrays()
  x_train[4, 1] = np.nan
  x_train[5, 0] = np.inf
  with pytest.raises(DataError, match=r"x_train contains 2 non-finite values .* index \(4, 1\)"):
    data.from_arrays(x_train, y_train, x_test, y_test)


def test_float32_overflow_is_non_finite():
  x_train, y_train, x_test, y_test = classification_arrays()
  x_test[0, 0] = 1e300
  with pytest.raises(DataError, match="x_test contains 1 non-finite"):
    data.from_arrays(x_train, y_train, x_test, y_test)


def test_length_mismatch_names_both_fields():
  x_train, y_train, x_test, y_test = classification_arrays()
  with pytest.raises(DataError, match="x_train has 6 examples but y_train has 5"):
    data.from_arrays(x_train, y_train[:5], x_test, y_test, num_classes=3)


def test_labels_out_of_range_named():
  x_train, y_train, x_test, y_test = classification_arrays()
  y_test[2] = 3
  with pytest.raises(DataError, match=r"y_test labels must lie in \[0, 3\), found 3 at index 2"):
    data.from_arrays(x_train, y_train, x_test, y_test, num_classes=3)
  y_test[2] = -1
  with pytest.raises(DataError, match="y_test.*found -1"):
    data.from_arrays(x_train, y_train, x_test, y_test)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.__setitem__(2, a[2][:, :2]), "input shape mismatch.*\\(3,\\).*\\(2,\\)"),
        (lambda a: a.__setitem__(0, a[0][:0]), "x_train is empty"),
        (lambda a: a.__setitem__(0, a[0].astype(str)), "x_train has dtype <U"),
        (lambda a: a.__setitem__(3, a[3] + 0.5), "y_test must hold integer class labels"),
    ],
)
def test_check_dataset_rejects(change, message):
  arrays = list(classification_arrays())
  change(arrays)
  with pytest.raises(DataError, match=message):
    data.check_dataset(Dataset(*arrays, 3, "t"))


def test_from_arrays_infers_task():
  x_train, y_train, x_test, y_test = classification_arrays()
  ds = data.from_arrays(x_train, y_train, x_test, y_test)
  assert ds.task == "classification" and ds.num_classes == 3 and ds.name == "arrays"

  with pytest.raises(DataError, match="float64/float64 values.*pass num_classes=0"):
    data.from_arrays(x_train, y_train * 0.5, x_test, y_test * 0.5)  # never silently regression
  reg = data.from_arrays(x_train, y_train * 0.5, x_test, y_test * 0.5, num_classes=0, name="reg")
  assert reg.task == "regression" and reg.y_train.shape == (6, 1) and reg.num_outputs == 1
  assert reg.y_train.dtype == np.float32 and reg.name == "reg"

  # Classes counted over both splits; all-negative labels are an error, not regression.
  y_test[0] = 4
  assert data.from_arrays(x_train, y_train, x_test, y_test).num_classes == 5
  with pytest.raises(DataError, match="y_train labels must lie in"):
    data.from_arrays(x_train, -1 - y_train, x_test, -1 - y_test)

  forced = data.from_arrays(x_train, y_train, x_test, y_test, num_classes=0)
  assert forced.task == "regression" and forced.y_test.shape == (4, 1)

  multi = data.from_arrays(x_train, np.ones((6, 2)), x_test, np.ones((4, 2)), num_classes=0)
  assert multi.num_outputs == 2
  with pytest.raises(DataError, match="y_train has 2 regression outputs but y_test has 3"):
    data.from_arrays(x_train, np.ones((6, 2)), x_test, np.ones((4, 3)), num_classes=0)


# ------------------------------------------------------------------------------------ load_dataset


def test_load_dataset_unknown_name_lists_known():
  with pytest.raises(DataError) as info:
    data.load_dataset("imagenet")
  assert "'imagenet'" in str(info.value)
  for name in data.DATASETS:
    assert name in str(info.value)
  assert set(data.DATASETS) == {
      "mnist1d", "digits", "linear_regression", "teacher_student", "mnist", "cifar10"
  }


def test_load_dataset_unknown_and_missing_options():
  with pytest.raises(DataError, match="'digits' has no option 'num_samples'"):
    data.load_dataset("digits", num_samples=10)
  with pytest.raises(DataError, match="'cifar10' needs option path="):
    data.load_dataset("cifar10")


def test_load_dataset_passes_options(tmp_path):
  ds = data.load_dataset("linear_regression", num_train=7, num_test=3, dim=2, cache_dir=tmp_path)
  direct = data.linear_regression(num_train=7, num_test=3, dim=2, cache_dir=tmp_path)
  assert ds.x_train.shape == (7, 2)
  np.testing.assert_array_equal(ds.y_train, direct.y_train)


def test_standardize_uses_training_statistics_for_both_sets():
  raw = data.load_dataset("digits")
  per_feature = data.load_dataset("digits", standardize="per_feature")
  x = raw.x_train.astype(np.float64)
  mean, std = x.mean(0), x.std(0)
  constant = std == 0  # digits has always-zero corner pixels: only centred
  assert constant.any()
  np.testing.assert_allclose(per_feature.x_train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(per_feature.x_train.std(0)[~constant], 1, rtol=1e-4)
  expected_test = (raw.x_test - mean) / np.where(constant, 1.0, std)
  np.testing.assert_allclose(per_feature.x_test, expected_test, rtol=1e-5, atol=1e-5)
  glob = data.standardize(raw, "global")
  assert abs(glob.x_train.mean()) < 1e-5 and abs(glob.x_train.std() - 1) < 1e-5
  np.testing.assert_allclose(glob.x_test, (raw.x_test - x.mean()) / x.std(), rtol=1e-5,
                             atol=1e-5)
  assert data.standardize(raw, "none") is raw
  with pytest.raises(data.DataError, match="standardize: 'z' is not one of none, global"):
    data.load_dataset("digits", standardize="z")
