"""Readers for image data sets in their raw binary formats: MNIST (IDX) and CIFAR-10 (binary).

Both read bytes with numpy only; nothing is ever unpickled (so the python-pickle CIFAR release,
which can run code when loaded, is not supported by design).

IDX (http://yann.lecun.com/exdb/mnist/): a header of 2 zero bytes, a dtype code byte (0x08
unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a
number-of-dimensions byte, then one big-endian int32 size per dimension; then the data,
big-endian, row-major.

CIFAR-10 binary (https://www.cs.toronto.edu/~kriz/cifar.html): each record is 1 label byte then
3072 pixel bytes, channel-major (1024 red, 1024 green, 1024 blue; each plane 32x32 row-major).
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from jaxsgd.data._dataset import DataError, Dataset, check_dataset

PathLike = str | os.PathLike

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
_CIFAR_SUBFOLDER = "cifar-10-batches-bin"


def read_idx(file: PathLike) -> np.ndarray:
  """The array stored in an IDX file (gzip-compressed if the name ends in .gz), native byte order.

  Raises:
    DataError: naming the file, if it is missing, has a bad magic number or dtype code, or holds
      a different number of bytes than its header promises.
  """
  file = os.fspath(file)
  try:
    opener = gzip.open if file.endswith(".gz") else open
    with opener(file, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise DataError(f"IDX file not found: {file}") from None
  except (OSError, EOFError) as error:  # e.g. a corrupt gzip stream
    raise DataError(f"cannot read IDX file {file}: {error}") from None

  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise DataError(
        f"{file} is not an IDX file: its magic number must start with 2 zero bytes, "
        f"got {data[:4].hex()}"
    )
  code, ndim = data[2], data[3]
  if code not in _IDX_DTYPES:
    raise DataError(f"{file} has unknown IDX dtype code 0x{code:02x}")
  header_bytes = 4 + 4 * ndim
  if len(data) < header_bytes:
    raise DataError(f"{file} is truncated: header needs {header_bytes} bytes, file has {len(data)}")
  shape = tuple(int(n) for n in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) - header_bytes != expected:
    raise DataError(
        f"{file}: header gives shape {shape} ({expected} data bytes) but the file holds "
        f"{len(data) - header_bytes} data bytes"
    )
  array = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def _find_idx(folder: str, stem: str) -> str:
  for candidate in (os.path.join(folder, stem), os.path.join(folder, stem + ".gz")):
    if os.path.exists(candidate):
      return candidate
  raise DataError(f"MNIST file not found: {os.path.join(folder, stem)} (or .gz)")


def mnist_idx(path: PathLike) -> Dataset:
  """MNIST (or any data set in MNIST's four-file IDX layout, e.g. Fashion-MNIST) from a folder.

  Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
  t10k-labels-idx1-ubyte, each optionally gzipped (.gz).

  Returns:
    x [N, 28, 28, 1] float32 = pixel / 255 in [0, 1]; y [N] int32; 10 classes.

  Raises:
    DataError: naming the file, if one is missing or malformed, images are not [N, H, W] uint8,
      labels are not [N] uint8, or an image file and its label file disagree on N.
  """
  folder = os.fspath(path)
  files = {field: _find_idx(folder, stem) for field, stem in _MNIST_FILES.items()}
  arrays = {field: read_idx(file) for field, file in files.items()}
  for split in ("train", "test"):
    images, labels = f"x_{split}", f"y_{split}"
    if arrays[images].ndim != 3 or arrays[images].dtype != np.uint8:
      raise DataError(
          f"{files[images]} must hold uint8 images [N, H, W], got {arrays[images].dtype} "
          f"{arrays[images].shape}"
      )
    if arrays[labels].ndim != 1 or arrays[labels].dtype != np.uint8:
      raise DataError(
          f"{files[labels]} must hold uint8 labels [N], got {arrays[labels].dtype} "
          f"{arrays[labels].shape}"
      )
    if len(arrays[images]) != len(arrays[labels]):
      raise DataError(
          f"{files[images]} has {len(arrays[images])} images but {files[labels]} has "
          f"{len(arrays[labels])} labels"
      )
  return check_dataset(
      Dataset(
          arrays["x_train"][..., None] / np.float32(255),
          arrays["y_train"],
          arrays["x_test"][..., None] / np.float32(255),
          arrays["y_test"],
          10,
          "mnist",
      )
  )


def _read_cifar_batch(file: str) -> tuple[np.ndarray, np.ndarray]:
  """Images [n, 32, 32, 3] uint8 (HWC) and labels [n] uint8 from one CIFAR-10 binary batch file."""
  if not os.path.isfile(file):
    raise DataError(f"CIFAR-10 file not found: {file}")
  records = np.fromfile(file, dtype=np.uint8)
  if records.size == 0 or records.size % _CIFAR_RECORD_BYTES:
    raise DataError(
        f"{file} holds {records.size} bytes, not a positive multiple of the "
        f"{_CIFAR_RECORD_BYTES}-byte CIFAR-10 record (1 label + 3x32x32 pixels)"
    )
  records = records.reshape(-1, _CIFAR_RECORD_BYTES)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, records[:, 0]


def _cifar_train_files(folder: str) -> list[str]:
  """data_batch_1.bin, data_batch_2.bin, ... : all that exist, which must be numbered 1..k."""
  numbers = sorted(
      int(name[len("data_batch_"):-len(".bin")])
      for name in os.listdir(folder)
      if name.startswith("data_batch_") and name.endswith(".bin")
      and name[len("data_batch_"):-len(".bin")].isdigit()
  )
  if not numbers:
    raise DataError(f"CIFAR-10 file not found: {os.path.join(folder, 'data_batch_1.bin')}")
  for expected, number in enumerate(numbers, start=1):
    if number != expected:
      missing = os.path.join(folder, f"data_batch_{expected}.bin")
      raise DataError(f"CIFAR-10 file not found: {missing} (data_batch_{number}.bin exists)")
  return [os.path.join(folder, f"data_batch_{n}.bin") for n in numbers]


def cifar10_binary(path: PathLike) -> Dataset:
  """CIFAR-10 from its binary release: data_batch_1.bin.. data_batch_5.bin and test_batch.bin.

  `path` is the folder holding the files, or the folder holding the extracted
  `cifar-10-batches-bin` folder. The training set is every data_batch_k.bin present (numbered
  from 1 without gaps; the full release has 5 of 10000 records each), in order; files may hold
  any number of records.

  Returns:
    x [N, 32, 32, 3] float32 = pixel / 255 in [0, 1] (channels last: R, G, B); y [N] int32;
    10 classes.

  Raises:
    DataError: naming the file, if test_batch.bin or data_batch_1.bin is missing, the batches
      are not numbered 1..k, or a file's size is not a positive multiple of 3073 bytes.
  """
  folder = os.fspath(path)
  nested = os.path.join(folder, _CIFAR_SUBFOLDER)
  if not os.path.exists(os.path.join(folder, "test_batch.bin")) and os.path.isdir(nested):
    folder = nested
  if not os.path.isdir(folder):
    raise DataError(f"CIFAR-10 folder not found: {folder}")
  train = [_read_cifar_batch(file) for file in _cifar_train_files(folder)]
  x_test, y_test = _read_cifar_batch(os.path.join(folder, "test_batch.bin"))
  return check_dataset(
      Dataset(
          np.concatenate([images for images, _ in train]) / np.float32(255),
          np.concatenate([labels for _, labels in train]),
          x_test / np.float32(255),
          y_test,
          10,
          "cifar10",
      )
  )
