"""The reproducibility contract (README, "Reproducibility"): at one CPU device count a sweep is
bitwise reproducible; another device count changes float32 rounding only (here, 60 steps at
B = 256: 1e-7 relative), every result records where it was computed, and a sweep resumed
elsewhere warns."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import NUM_DEVICES
from jaxsgd import load_sweep, run_sweep
from jaxsgd.data import mnist1d

sys.path.insert(0, str(Path(__file__).parent))
from _workers import DEVICES_CONFIG  # noqa: E402

WORKERS = str(Path(__file__).with_name("_workers.py"))


def _flat(params) -> np.ndarray:
    """[runs, all parameters]."""
    return np.concatenate([np.asarray(l).reshape(l.shape[0], -1)
                           for l in jax.tree.leaves(params)], axis=1)


def test_one_and_several_cpu_devices_differ_by_rounding_only(tmp_path):
    assert NUM_DEVICES > 1
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1")
    subprocess.run([sys.executable, WORKERS, "devices", str(tmp_path / "one")], env=env,
                   check=True, timeout=300)
    one = load_sweep(tmp_path / "one")
    data = mnist1d(num_samples=1000)
    here = run_sweep(DEVICES_CONFIG, tmp_path / "here", data=data, progress=False)
    again = run_sweep(DEVICES_CONFIG, data=data, progress=False)

    assert one.provenance["runtime"]["devices"] == 1
    assert here.provenance["runtime"]["devices"] == NUM_DEVICES
    assert load_sweep(tmp_path / "here").provenance["runtime"] == here.provenance["runtime"]
    # The same device count: bitwise.
    np.testing.assert_array_equal(_flat(again.params[256]), _flat(here.params[256]))
    np.testing.assert_array_equal(again.metrics.train_loss.values, here.metrics.train_loss.values)
    # Another device count: float32 rounding (measured ≤ 1e-7 relative after 60 steps).
    a, b = _flat(one.params[256]), _flat(here.params[256])
    assert np.all(np.linalg.norm(a - b, axis=1) <= 1e-5 * np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(one.metrics.train_loss.values, here.metrics.train_loss.values,
                               rtol=1e-5)
    # Resuming (here: re-opening the finished sweep) on another runtime warns, never refuses.
    with pytest.warns(RuntimeWarning, match="started on 1 CPU device"):
        reopened = run_sweep(DEVICES_CONFIG, tmp_path / "one", data=data, progress=False)
    np.testing.assert_array_equal(_flat(reopened.params[256]), _flat(one.params[256]))
