"""Shared fixtures: a private data cache and small real data sets."""

import os

import pytest


def pytest_configure(config):
    # Generated data sets go to a per-run cache, never the user's ~/.cache.
    import tempfile

    os.environ.setdefault("JAXSGD_CACHE", tempfile.mkdtemp(prefix="jaxsgd-test-cache-"))


@pytest.fixture(scope="session")
def mnist1d_small():
    """MNIST-1D with 1000 examples: 800 train, 200 test, 40 features, 10 classes."""
    from jaxsgd.data import mnist1d

    return mnist1d(num_samples=1000)
