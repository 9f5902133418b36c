"""On-disk cache for generated data sets: one .npz file per (generator, arguments).

The file is `<cache_dir>/<generator>-<key>.npz`, where `key` is the first 16 hex digits of the
SHA-256 of the canonical JSON of `{"generator", "arguments"}` (sorted keys). It holds the four
arrays, `num_classes`, `name` and that JSON, and contains no Python objects, so it loads with
`allow_pickle=False`. Files are written to a temporary file in the same folder and renamed into
place (`os.replace`), so a reader never sees a half-written file, even with concurrent writers.

`cache_dir=None` means the `JAXSGD_CACHE` environment variable if set, else `~/.cache/jaxsgd`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any, Callable

import numpy as np

from jaxsgd._util import atomic_write, write_npz
from jaxsgd.runtime import cache_folder
from jaxsgd.data._dataset import Dataset, check_dataset

PathLike = str | os.PathLike


def cache_path(generator: str, arguments: dict[str, Any], cache_dir: PathLike | None) -> str:
  """Path of the cache file for `generator` called with `arguments` (JSON-serialisable)."""
  if cache_dir is None:
    folder = cache_folder()
  else:
    folder = os.path.expanduser(os.fspath(cache_dir))
  key = hashlib.sha256(_canonical_json(generator, arguments).encode()).hexdigest()[:16]
  return os.path.join(folder, f"{generator}-{key}.npz")


def _canonical_json(generator: str, arguments: dict[str, Any]) -> str:
  return json.dumps(
      {"generator": generator, "arguments": arguments}, sort_keys=True, separators=(",", ":")
  )


def cached_dataset(
    generator: str,
    arguments: dict[str, Any],
    make: Callable[[], Dataset],
    cache_dir: PathLike | None,
) -> Dataset:
  """The data set cached for (`generator`, `arguments`), calling `make()` only on a miss.

  A file that cannot be read, or that was written for other arguments, counts as a miss and is
  overwritten.
  """
  path = cache_path(generator, arguments, cache_dir)
  expected = _canonical_json(generator, arguments)
  if os.path.exists(path):
    dataset = _read(path, expected)
    if dataset is not None:
      return dataset
  dataset = check_dataset(make())
  _write_atomically(path, dataset, expected)
  return dataset


def _read(path: str, expected_json: str) -> Dataset | None:
  try:
    with np.load(path, allow_pickle=False) as f:
      if str(f["arguments"]) != expected_json:
        return None
      return check_dataset(
          Dataset(f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                  int(f["num_classes"]), str(f["name"]))
      )
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None


def _write_atomically(path: str, dataset: Dataset, arguments_json: str) -> None:
  atomic_write(path, lambda tmp: write_npz(
      tmp,
      x_train=dataset.x_train,
      y_train=dataset.y_train,
      x_test=dataset.x_test,
      y_test=dataset.y_test,
      num_classes=np.int64(dataset.num_classes),
      name=np.str_(dataset.name),
      arguments=np.str_(arguments_json),
  ))
