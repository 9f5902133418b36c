"""Curvature against ground truth: the dense Hessian of a small MLP (``jax.hessian`` on the
raveled params, ``numpy.linalg.eigh``) in float64, diagonal quadratics with known spectra, and
the exact variance of Hutchinson's estimator, Var(vᵀAv) = 2(‖A‖_F² − Σ_i A_ii²) for
Rademacher v."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxsgd.measure.curvature import (block_top_hessian_eigenvalues, hessian_blocks, hessian_spectrum,
                              hessian_trace, hvp, spectral_moment, top_hessian_eigenvalues)
from jaxsgd.losses import cross_entropy
from jaxsgd.models import make_model

N_EXAMPLES = 40  # slices of 16: two and a remainder of 8
WIDTH = 200
MODEL = make_model("mlp", (8,), 4, width=WIDTH, depth=1, activation="tanh")  # 2604 parameters
RUNS = 3
KEY = jax.random.key(7)
# Nearly all of this file's time is XLA compiling: 1–3 s of CPU per estimator at the default
# optimisation level, about half that at level 0 (same programs, same results to rounding).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(fun):
    return jax.jit(fun, compiler_options=FAST_COMPILE)


def mlp_loss(params, batch):
    x, y = batch
    return cross_entropy(MODEL.apply(params, x), y)


def mlp_params(rng, runs):
    """Params of ``MODEL`` for ``runs`` runs (leading axis), LeCun-normal kernels and small
    random biases, drawn with NumPy (flax's init costs ~1 s of compilation per call)."""
    def dense(fan_in, fan_out):
        return {"bias": 0.1 * rng.normal(size=(runs, fan_out)),
                "kernel": rng.normal(size=(runs, fan_in, fan_out)) / fan_in**0.5}
    return {"Dense_0": dense(8, WIDTH), "Dense_1": dense(WIDTH, 4)}


ESTIMATES = {  # name: estimate(params, batch, key) for one run's params
    "largest": lambda p, b, k: top_hessian_eigenvalues(mlp_loss, p, b, k=3, key=k, num_iterations=80),
    "smallest": lambda p, b, k: top_hessian_eigenvalues(mlp_loss, p, b, k=2, key=k, num_iterations=80,
                                                        which="smallest"),
    "power": lambda p, b, k: top_hessian_eigenvalues(mlp_loss, p, b, k=3, key=k, num_iterations=1000,
                                                     method="power"),
    "blocks": lambda p, b, k: block_top_hessian_eigenvalues(mlp_loss, p, b, key=k, k=2,
                                                            num_iterations=60),
    "trace_16": lambda p, b, k: hessian_trace(mlp_loss, p, b, key=k, num_probes=16),
    "trace_256": lambda p, b, k: hessian_trace(mlp_loss, p, b, key=k, num_probes=256),
    "spectrum": lambda p, b, k: hessian_spectrum(mlp_loss, p, b, key=k, num_steps=40, num_probes=32),
    "hvp": lambda p, b, k: hvp(mlp_loss, p, b, p),
    "hvp_16": lambda p, b, k: hvp(mlp_loss, p, b, p, slice_size=16),  # 2 slices + 8 more
}
# One of each code path, for the vmap test (smallest, trace_256 and hvp repeat code paths).
VMAPPED = ("largest", "power", "blocks", "trace_16", "spectrum", "hvp_16")


def measure(params, batch, names=tuple(ESTIMATES)):
    """The named estimates of one run's params, each with its own key."""
    keys = jax.random.split(KEY, len(ESTIMATES))
    return {name: ESTIMATES[name](params, batch, key)
            for name, key in zip(ESTIMATES, keys) if name in names}


@pytest.fixture(scope="module")
def runs():
    """Three runs' params [3, ...], dense Hessians [3, d, d] and their eigenvalues [3, d]
    (ascending), every estimate of each run alone (``alone[i][name]``), and the ``VMAPPED``
    estimates of all three runs vmapped over the leading runs axis (``together[name]``)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        batch = (jnp.asarray(rng.normal(size=(N_EXAMPLES, 8))),
                 jnp.asarray(rng.integers(0, 4, size=N_EXAMPLES)))
        params = mlp_params(rng, RUNS)

        def hessian(p):
            flat_params, unravel = ravel_pytree(p)
            return jax.hessian(lambda f: mlp_loss(unravel(f), batch))(flat_params)

        dense = np.asarray(jit(jax.vmap(hessian))(params))
        one = jit(measure)
        alone = [jax.tree.map(np.asarray, one(jax.tree.map(lambda a, i=i: a[i], params), batch))
                 for i in range(RUNS)]
        vmapped = jax.vmap(lambda p, b: measure(p, b, VMAPPED), (0, None))
        together = jax.tree.map(np.asarray, jit(vmapped)(params, batch))
    return params, dense, np.linalg.eigvalsh(dense), alone, together


def flat(tree):
    """The leaves of a pytree as one NumPy vector (``ravel_pytree`` order)."""
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tree)])


def check_eigenpairs(pairs, h, expected, rtol):
    """Eigenvalues match ``expected``, vectors are unit and the residuals are honest."""
    np.testing.assert_allclose(pairs.eigenvalues, expected, rtol=rtol)
    eigenvectors = jax.tree.map(np.asarray, pairs.eigenvectors)
    vectors = np.stack([flat(jax.tree.map(lambda a, i=i: a[i], eigenvectors))
                        for i in range(len(expected))])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-10)
    residuals = np.linalg.norm(vectors @ h - np.asarray(pairs.eigenvalues)[:, None] * vectors,
                               axis=1)
    np.testing.assert_allclose(pairs.residuals, residuals, rtol=1e-6, atol=1e-12)
    assert bool(np.all(pairs.converged))


def test_lanczos_and_power_match_dense_eigh_of_an_mlp_hessian(runs):
    _, dense, eigenvalues, alone, _ = runs
    for h, values, out in zip(dense, eigenvalues, alone):
        assert values[0] < 0  # an indefinite Hessian: "smallest" is the most negative
        check_eigenpairs(out["largest"], h, values[::-1][:3], rtol=1e-4)
        check_eigenpairs(out["smallest"], h, values[:2], rtol=1e-4)
        by_magnitude = values[np.argsort(-np.abs(values))]  # power iteration's order
        check_eigenpairs(out["power"], h, by_magnitude[:3], rtol=1e-4)
        assert int(out["largest"].num_matvecs) == 80 + 3
        assert int(out["power"].num_matvecs) == 3 * 1001


def test_block_top_eigenvalues_match_dense_diagonal_blocks(runs):
    params, dense, _, alone, _ = runs
    first = jax.tree.map(lambda a: a[0], params)
    assert list(hessian_blocks(first)) == ["Dense_0", "Dense_1"]
    assert list(hessian_blocks({"params": first})) == ["Dense_0", "Dense_1"]  # flax wrapper
    for h, out in zip(dense, alone):
        assert list(out["blocks"]) == ["Dense_0", "Dense_1"]
        start = 0
        for name, pairs in out["blocks"].items():
            size = flat(first[name]).size
            block = h[start:start + size, start:start + size]  # ravel order: Dense_0, Dense_1
            start += size
            check_eigenpairs(pairs, block, np.linalg.eigvalsh(block)[::-1][:2], rtol=1e-4)
            assert jax.tree.structure(pairs.eigenvectors) == jax.tree.structure(first[name])
        assert start == h.shape[0]


def hutchinson_sd(a):
    """The exact standard deviation of vᵀAv over Rademacher v."""
    return np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)))


def test_hutchinson_trace_is_unbiased_and_its_stderr_falls_as_one_over_root_probes(runs):
    _, dense, _, alone, _ = runs
    for h, out in zip(dense, alone):
        few, many = out["trace_16"], out["trace_256"]
        for estimate in (few, many):
            assert abs(float(estimate.trace) - np.trace(h)) < 3 * float(estimate.stderr)
        # The sample sd of 256 probes is within 20% of the exact sd (its relative sd is about
        # 0.05–0.1); the ratio of standard errors, 4 · sd_16/sd_256, is within 40% of 4 (about
        # 2 sd of the sample sd of 16 probes).
        np.testing.assert_allclose(float(many.stderr), hutchinson_sd(h) / 16, rtol=0.2)
        np.testing.assert_allclose(float(few.stderr / many.stderr), 4.0, rtol=0.4)
        assert int(few.num_probes) == 16 and int(many.num_probes) == 256


def test_slq_moments_and_density_of_an_mlp_hessian(runs):
    _, dense, eigenvalues, alone, _ = runs
    for h, values, out in zip(dense, eigenvalues, alone):
        spectrum = out["spectrum"]
        probes = spectrum.nodes.shape[0]
        assert spectrum.nodes.shape == spectrum.weights.shape == (32, 40)
        np.testing.assert_allclose(np.sum(spectrum.weights, axis=1), 1.0, rtol=1e-10)
        # Gauss quadrature with 40 nodes is exact for vᵀHᵖv, p ≤ 79: each moment is
        # Hutchinson's estimate of tr Hᵖ, within 4 of its exact standard errors.
        h2 = h @ h
        cubic = spectral_moment(spectrum, 3)
        for estimate, a in ((spectrum.trace, h), (spectrum.trace_sq, h2), (cubic.trace, h2 @ h)):
            assert abs(float(estimate) - np.trace(a)) < 4 * hutchinson_sd(a) / np.sqrt(probes)
        np.testing.assert_allclose(np.trapezoid(spectrum.density, spectrum.grid), 1.0,
                                   atol=1e-6)
        # Ritz values lie inside the spectrum.
        assert values[0] - 1e-9 <= spectrum.nodes.min()
        assert spectrum.nodes.max() <= values[-1] + 1e-9


def test_sliced_hvp_equals_unsliced_and_dense(runs):
    params, dense, _, alone, _ = runs
    for i, (h, out) in enumerate(zip(dense, alone)):
        v = flat(jax.tree.map(lambda a: a[i], params))  # hvp(…, v=params)
        np.testing.assert_allclose(flat(out["hvp"]), h @ v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(flat(out["hvp_16"]), flat(out["hvp"]), rtol=1e-10,
                                   atol=1e-12)


def test_vmapped_over_runs_equals_each_run_alone(runs):
    _, _, _, alone, together = runs
    assert sorted(together) == sorted(VMAPPED)
    for i, one in enumerate(alone):
        jax.tree.map(lambda t, o: np.testing.assert_allclose(t[i], o, rtol=1e-9, atol=1e-12),
                     together, {name: one[name] for name in VMAPPED})


def quadratic_loss(eigenvalues):
    """L(θ) = mean over the batch of ½ Σ_i λ_i θ_i², θ a two-leaf dict: H = diag(λ)."""
    def loss_fn(params, batch):
        theta = jnp.concatenate([params["a"], params["b"].ravel()])
        return jnp.mean(batch) * 0.5 * jnp.sum(eigenvalues * theta**2)
    return loss_fn


def quadratic_params(d):
    return {"a": jnp.ones(d - 6), "b": jnp.ones((2, 3))}


def test_diagonal_quadratic_eigenvalues_trace_and_spectrum_are_exact():
    rng = np.random.default_rng(1)
    lam = np.concatenate([[10.0, 8.0, 6.5, -3.0, -2.5], rng.uniform(-2, 2, size=25)])
    # Eigenvalues 1, 2, 3 with multiplicities 10, 15, 5: three Lanczos steps recover this
    # spectrum exactly, with weights multiplicity/d for every Rademacher probe.
    steps = np.repeat([1.0, 2.0, 3.0], [10, 15, 5])
    with jax.enable_x64(True):
        def measure(params, batch):
            loss_fn = quadratic_loss(jnp.asarray(lam))
            return (
                top_hessian_eigenvalues(loss_fn, params, batch, k=3, key=KEY, num_iterations=30),
                top_hessian_eigenvalues(loss_fn, params, batch, k=2, key=KEY, num_iterations=30,
                                        which="smallest"),
                top_hessian_eigenvalues(loss_fn, params, batch, k=3, key=KEY, num_iterations=200,
                                        method="power"),
                hessian_trace(loss_fn, params, batch, key=KEY, num_probes=8),
                hessian_spectrum(quadratic_loss(jnp.asarray(steps)), params, batch, key=KEY, num_steps=3, num_probes=4))

        largest, smallest, power, trace, spectrum = jax.tree.map(
            np.asarray, jit(measure)(quadratic_params(30), jnp.ones(4)))
    h = np.diag(lam)
    for pairs, expected in ((largest, [10.0, 8.0, 6.5]), (smallest, [-3.0, -2.5]),
                            (power, [10.0, 8.0, 6.5])):
        check_eigenpairs(pairs, h, expected, rtol=1e-10)
    np.testing.assert_allclose(trace.trace, lam.sum(), rtol=1e-12)
    assert float(trace.stderr) < 1e-12  # every Rademacher probe gives vᵀHv = tr H
    np.testing.assert_allclose(spectrum.nodes, np.tile([1.0, 2.0, 3.0], (4, 1)), rtol=1e-10)
    np.testing.assert_allclose(spectrum.weights, np.tile([10, 15, 5], (4, 1)) / 30, rtol=1e-10)
    np.testing.assert_allclose(spectrum.trace, steps.sum(), rtol=1e-12)
    np.testing.assert_allclose(spectrum.trace_sq, np.sum(steps**2), rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=0, key=k), "k: 0 is not an integer in [1, 30]"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=31, key=k), "k: 31 is not an integer in [1, 30]"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=3, key=k, num_iterations=2),
     "num_iterations: 2 is not an integer in [3, 30]"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=3, key=k, num_iterations=31),
     "num_iterations: 31 is not an integer in [3, 30]"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=1, key=k, method="arnoldi"),
     "method must be one of"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=1, key=k, which="middle"),
     "which must be one of"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=1, key=k, method="power",
                                                which="smallest"), "needs method='lanczos'"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=1, key=k, tol=0.0), "tol must be"),
    (lambda l, p, b, k: top_hessian_eigenvalues(l, p, b, k=1.5, key=k), "k: 1.5 is not an integer in [1, 30]"),
    (lambda l, p, b, k: hvp(l, p, b, p, slice_size=0), "slice_size: 0 is not an integer >= 1"),
    (lambda l, p, b, k: hessian_trace(l, p, b, key=k, num_probes=0), "num_probes: 0 is not an integer >= 1"),
    (lambda l, p, b, k: hessian_spectrum(l, p, b, key=k, num_steps=0, num_probes=4), "num_steps: 0 is not an integer in [1, 30]"),
    (lambda l, p, b, k: hessian_spectrum(l, p, b, key=k, num_steps=31, num_probes=4), "num_steps: 31 is not an integer in [1, 30]"),
    (lambda l, p, b, k: hessian_spectrum(l, p, b, key=k, num_steps=4, num_probes=4, sigma=-1.0), "sigma must be"),
    (lambda l, p, b, k: hessian_spectrum(l, p, b, key=k, num_steps=4, num_probes=4, grid=1), "grid: 1 is not an integer >= 2"),
    (lambda l, p, b, k: block_top_hessian_eigenvalues(l, p, b, key=k, k=7),
     "k: 7 is not an integer in [1, 6] (the size of block 'b')"),
    (lambda l, p, b, k: block_top_hessian_eigenvalues(l, {"w": jnp.ones(3)}, b, key=k),
     "single array"),
])
def test_bad_input_raises_a_clear_value_error(call, message):
    loss_fn = quadratic_loss(jnp.arange(30.0))
    with pytest.raises(ValueError, match=re.escape(message)):
        call(loss_fn, quadratic_params(30), jnp.ones(4), jax.random.key(0))
