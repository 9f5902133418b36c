"""Confidence intervals: the bootstrap's point estimates equal the exact estimators, and the
intervals cover the known truth at about their nominal rate (Gaussian linear regression with a
closed-form noise scale; Gaussian two-batch norms; Student-t over seeds)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from jaxsgd.analysis.intervals import noise_scale_interval, ratio_interval, seed_interval
from jaxsgd.losses import cross_entropy
from jaxsgd.models import mlp
from jaxsgd.measure.noise import gradient_noise_scale, hessian_noise_scale, two_batch_noise_scale
from jaxsgd.measure.per_example import example_gradient_gram

CONFIDENCE = 0.9
REPLICATES = 200  # coverage of a 90% interval: binomial sd 0.021


def _covers(lower, upper, truth):
    return np.mean((np.asarray(lower) <= truth) & (truth <= np.asarray(upper)))


def test_gram_and_bootstrap_estimates_match_the_exact_estimators():
    key = jax.random.key(0)
    model = mlp((10,), 4, width=16, depth=1)
    params = model.init(key)
    x = jax.random.normal(key, (24, 10))
    y = jnp.argmax(x[:, :4], axis=1)  # learnable labels: a clear mean gradient

    def loss_fn(p, b):
        return cross_entropy(model.apply(p, b[0]), b[1])

    _, _, fused = jax.jit(lambda p, b: example_gradient_gram(loss_fn, p, b))(
        params, (x, y))
    grad = jax.jit(jax.grad(loss_fn))
    grads = [grad(params, (x[i:i + 1], y[i:i + 1])) for i in range(24)]
    flat = np.stack([np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(g)])
                     for g in grads]).astype(np.float64)
    np.testing.assert_allclose(np.asarray(fused), flat @ flat.T, rtol=1e-4, atol=1e-6)
    exact = jax.jit(lambda p, b: gradient_noise_scale(loss_fn, p, b, unbiased=True))(params,
                                                                                     (x, y))
    interval_of = jax.jit(lambda p, b, k: noise_scale_interval(loss_fn, p, b, key=k))
    interval = interval_of(params, (x, y), jax.random.key(2))
    for name in ("grad_sq_norm", "trace_cov", "b_simple"):
        got = getattr(interval, name)
        assert float(got.estimate) == pytest.approx(float(getattr(exact, name)), rel=1e-4)
        assert float(got.lower) < float(got.estimate) < float(got.upper)
    # Random labels at initialisation: |G|² unresolved (negative unbiased estimate), so
    # B_simple has no finite upper end.
    noise = (x, jax.random.randint(jax.random.key(1), (24,), 0, 4))
    unresolved = interval_of(params, noise, jax.random.key(2)).b_simple
    assert float(unresolved.estimate) < 0 and float(unresolved.upper) == np.inf


def test_bootstrap_interval_covers_the_closed_form_noise_scale():
    """x ~ N(0, S), y = w*ᵀx + ε: B_simple = ((δᵀSδ + σ²)·tr S + |Sδ|²)/|Sδ|² (SCIENCE.md)."""
    d, n, sigma = 8, 256, 0.5
    s = 1.0 / np.arange(1, d + 1)
    rng = np.random.default_rng(0)
    w_star, delta = rng.normal(size=d), 0.6 * rng.normal(size=d)
    g = s * delta
    trace = (delta @ (s * delta) + sigma**2) * s.sum() + g @ g
    truth = {"grad_sq_norm": g @ g, "trace_cov": trace, "b_simple": trace / (g @ g)}

    def loss_fn(w, b):
        return 0.5 * jnp.mean(jnp.square(b[0] @ w - b[1]))

    x = rng.normal(size=(REPLICATES, n, d)) * np.sqrt(s)
    y = x @ w_star + sigma * rng.normal(size=(REPLICATES, n))
    w = jnp.asarray(w_star + delta, jnp.float32)
    keys = jax.random.split(jax.random.key(1), REPLICATES)
    one = jax.jit(lambda b, k: noise_scale_interval(loss_fn, w, b, key=k, num_resamples=1000,
                                                    confidence=CONFIDENCE))
    intervals = jax.lax.map(lambda a: one((a[0], a[1]), a[2]),
                            (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), keys))
    for name, value in truth.items():
        got = getattr(intervals, name)
        assert 0.8 <= _covers(got.lower, got.upper, value) <= 0.97, name


def test_ratio_interval_covers_the_two_batch_noise_scale():
    """Gaussian batch gradients G_B ~ N(G, Σ/B) at B = 4 and 64; 100 pairs per series."""
    p, steps = 20, 100
    rng = np.random.default_rng(3)
    g = rng.normal(size=p) * 0.3
    var = rng.uniform(0.5, 2.0, size=p)
    truth = var.sum() / (g @ g)
    small = g + rng.normal(size=(REPLICATES, steps, p)) * np.sqrt(var / 4)
    big = g + rng.normal(size=(REPLICATES, steps, p)) * np.sqrt(var / 64)
    g_sq, tr = two_batch_noise_scale(jnp.sum(small**2, -1), jnp.sum(big**2, -1), 4, 64)
    keys = jax.random.split(jax.random.key(4), REPLICATES)
    got = jax.jit(jax.vmap(lambda t, gg, k: ratio_interval(
        t, gg, key=k, num_resamples=1000, confidence=CONFIDENCE)))(tr, g_sq, keys)
    assert 0.8 <= _covers(got.lower, got.upper, truth) <= 0.97
    blocked = ratio_interval(tr[0], g_sq[0], key=keys[0], block=10)
    assert float(blocked.estimate) == pytest.approx(float(got.estimate[0]))
    with pytest.raises(ValueError, match="block: 101"):
        ratio_interval(tr[0], g_sq[0], key=keys[0], block=101)
    with pytest.raises(ValueError, match="confidence: 1.5"):
        ratio_interval(tr[0], g_sq[0], key=keys[0], confidence=1.5)


def test_hessian_noise_standard_error_matches_the_subset_spread():
    """tr(HΣ) from 8 of 32 examples: the reported standard error equals the spread of the
    estimate over many subsets; with all 32 the estimate is exact and the error zero."""
    with jax.enable_x64(True):
        key = jax.random.key(0)
        model = mlp((6,), 3, width=8, depth=1)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.init(key))
        x = jax.random.normal(key, (32, 6), jnp.float64)
        y = jax.random.randint(jax.random.key(1), (32,), 0, 3)

        def loss_fn(p, b):
            return cross_entropy(model.apply(p, b[0]), b[1])

        full = jax.jit(lambda p: hessian_noise_scale(loss_fn, p, (x, y), unbiased=True))(params)
        assert float(full.trace_hessian_cov_stderr) == 0.0
        subset = jax.jit(jax.vmap(lambda k: hessian_noise_scale(
            loss_fn, params, (x, y), key=k, num_examples=8, unbiased=True)))(
            jax.random.split(jax.random.key(2), 1000))
        spread = float(np.std(subset.trace_hessian_cov))
        assert float(np.sqrt(np.mean(subset.trace_hessian_cov_stderr**2))) == pytest.approx(
            spread, rel=0.1)
        assert float(np.mean(subset.trace_hessian_cov)) == pytest.approx(
            float(full.trace_hessian_cov), abs=4 * spread / np.sqrt(1000))


def test_b_noise_interval_over_batches_covers_the_truth():
    """ℓ_i(θ) = ½θᵀAθ − b_iᵀθ: H = A for every batch, g_i = Aθ − b_i, Σ = Cov(b), so
    B_noise = tr(AΣ)/(GᵀAG) exactly; 20 batches of 16 per interval."""
    d, batches, n = 6, 20, 16
    rng = np.random.default_rng(7)
    a = np.diag(np.linspace(0.5, 3.0, d))
    mean_b, scale = rng.normal(size=d), rng.uniform(0.5, 1.5, size=d)
    theta = np.zeros(d)
    g = a @ theta - mean_b
    truth = np.sum(np.diag(a) * scale**2) / (g @ a @ g)

    def loss_fn(t, b):
        return jnp.mean(0.5 * t @ jnp.asarray(a, jnp.float32) @ t - b @ t)

    b = mean_b + scale * rng.normal(size=(REPLICATES, batches, n, d))
    one = jax.vmap(lambda batch: hessian_noise_scale(loss_fn, jnp.zeros(d), batch,
                                                     unbiased=True))
    h = jax.jit(jax.vmap(one))(jnp.asarray(b, jnp.float32))
    keys = jax.random.split(jax.random.key(8), REPLICATES)
    got = jax.jit(jax.vmap(lambda t, gg, k: ratio_interval(
        t, gg, key=k, num_resamples=1000, confidence=CONFIDENCE)))(
        h.trace_hessian_cov, h.grad_hessian_grad, keys)
    assert 0.8 <= _covers(got.lower, got.upper, truth) <= 0.97


def test_seed_interval_is_the_student_t_interval_and_covers_the_mean():
    rng = np.random.default_rng(5)
    values = xr.DataArray(rng.normal(2.0, 1.5, size=(4000, 3)), dims=("point", "seed"))
    got = seed_interval(values)
    row = values.values[0]
    half = stats.t.ppf(0.95, 2) * row.std(ddof=1) / np.sqrt(3)
    assert float(got.lower[0]) == pytest.approx(row.mean() - half)
    assert float(got.upper[0]) == pytest.approx(row.mean() + half)
    assert 0.88 <= _covers(got.lower, got.upper, 2.0) <= 0.92
    values[0, 1] = np.nan  # a diverged seed
    assert np.isnan(float(seed_interval(values).estimate[0]))
    with pytest.raises(ValueError, match="dim: 'run'"):
        seed_interval(values, dim="run")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_interval(values.isel(seed=[0]))
