"""Checks for data-set generator arguments: each returns the canonical Python value or raises.

Canonical values matter beyond validation: the on-disk cache key is a JSON of the arguments, so
`dim=16` and `dim=np.int64(16)` must become the same `16`, and `noise_std=1` the same `1.0`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from jaxsgd.data._dataset import DataError


def integer(name: str, value: Any, minimum: int) -> int:
  """`value` as an int >= `minimum`; floats (even 3.0) and bools are rejected."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise DataError(f"{name} must be an integer, got {value!r}")
  if value < minimum:
    raise DataError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def real(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False,
         open_high: bool = False) -> float:
  """`value` as a finite float in [low, high] (either end open on request)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise DataError(f"{name} must be a finite real number, got {value!r}")
  value = float(value)
  below = value <= low if open_low else value < low
  above = value >= high if open_high else value > high
  if below or above:
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    raise DataError(f"{name} must lie in {interval}, got {value}")
  return value
