"""Shared fixtures: a private data cache and small real data sets."""

import os

import pytest

# Every test runs on 4 simulated CPU devices (set before JAX starts), so the whole suite
# exercises the run axis sharded over devices, with run counts that are not multiples of 4.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
NUM_DEVICES = int(os.environ["JAX_NUM_CPU_DEVICES"])


def pytest_configure(config):
    # Generated data sets go to a per-run cache, never the user's ~/.cache.
    import tempfile

    os.environ.setdefault("JAXSGD_CACHE", tempfile.mkdtemp(prefix="jaxsgd-test-cache-"))


@pytest.fixture(scope="session")
def mnist1d_small():
    """MNIST-1D with 1000 examples: 800 train, 200 test, 40 features, 10 classes."""
    from jaxsgd.data import mnist1d

    return mnist1d(num_samples=1000)
