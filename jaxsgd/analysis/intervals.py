"""Confidence intervals for the noise-scale estimators: bootstrap and across seeds.

* ``noise_scale_interval(loss_fn, params, batch, key=key)`` — the examples of ``batch`` are a
  sample of a population; bootstrap them (resample with replacement) and report percentile
  intervals of the population's |G|², tr Σ and B_simple (unbiased estimators). A resample is a
  count vector w [n] (Σ w = n), and everything it needs comes from the Gram matrix of
  per-example gradients K_ij = g_i·g_j (``jaxsgd.measure.per_example.example_gradient_gram``, computed
  once): |Σ_i w_i g_i / n|² = wᵀKw / n² and mean |g_i|² = w·diag K / n. So thousands of
  resamples cost a few [R, n] × [n, n] products, never a gradient.
* ``ratio_interval(numerators, denominators, key=key)`` — a ratio of means, e.g. B_simple from a
  series of per-step two-batch estimates (tr Σ_est, |G|²_est) or EMA-free windows of a noise
  probe; bootstrap over measurements, in moving blocks of ``block`` consecutive ones when the
  series is autocorrelated (consecutive training steps).
  The same function gives B_noise's interval from ``hessian_noise_scale(..., unbiased=True)``
  on several independent batches (numerators tr(HΣ), denominators GᵀHG), or from the
  measurements of ``hessian_noise_probe``.
* ``seed_interval(values, dim="seed")`` — the mean over independent seeds with a Student-t
  interval, for any labelled sweep result (e.g. a probe's b_simple at each step).

Bootstrap intervals are *basic* (pivotal) intervals: the spread of the resampled estimates
about the bootstrap world's truth (the sample's own plug-in value), subtracted from the
estimate. Plain percentiles would be wrong here: the unbiased |G|² of a resample centres on
the sample's plug-in |Ḡ|², which exceeds the unbiased estimate by tr Σ/n. Ratios whose
denominator may be ≤ 0 (|G|² of a noisy gradient) get their interval through the reciprocal
|G|²/tr Σ, which stays finite, then inverted: an upper end is ``inf`` when the data cannot
exclude |G|² = 0.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import stats

from jaxsgd._util import check_int
from jaxsgd.measure.per_example import example_gradient_gram

PyTree = Any


class Interval(NamedTuple):
    """A point estimate and its confidence interval (same shapes)."""

    estimate: jax.Array
    lower: jax.Array
    upper: jax.Array


class NoiseScaleInterval(NamedTuple):
    """Intervals for |G|², tr Σ and B_simple (each an ``Interval`` of scalars)."""

    grad_sq_norm: Interval
    trace_cov: Interval
    b_simple: Interval


def _check(confidence: float, num_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence!r} must be in (0, 1)")
    check_int("num_resamples", num_resamples, 10)


def _basic(estimate, replicates, truth, confidence):
    """Basic (pivotal) bootstrap interval: the replicates' errors about the bootstrap world's
    truth (the plug-in value of the sample), subtracted from the estimate."""
    alpha = (1.0 - confidence) / 2.0
    errors = replicates - truth
    return (estimate - jnp.quantile(errors, 1.0 - alpha, axis=0),
            estimate - jnp.quantile(errors, alpha, axis=0))


def _inverse(lower, upper):
    """Interval of 1/r from an interval of r whose upper end is > 0 (a lower end ≤ 0: inf)."""
    return (jnp.where(upper > 0, 1.0 / upper, jnp.inf), jnp.where(lower > 0, 1.0 / lower, jnp.inf))


def _counts(key: jax.Array, num_resamples: int, n: int) -> jax.Array:
    """[R, n] bootstrap counts: n draws with replacement per resample."""
    idx = jax.random.randint(key, (num_resamples, n), 0, n)
    return jax.vmap(lambda i: jnp.zeros(n, jnp.float32).at[i].add(1.0))(idx)


def _noise_from_gram(counts, gram, n):
    """(|G|², tr Σ) for each count vector [R, n] (or [n]) given K [n, n]: the unbiased
    estimates, and the plug-in values of the (resampled) sample as a population."""
    mean_sq = counts @ jnp.diagonal(gram) / n
    plug_g = jnp.einsum("...i,ij,...j->...", counts, gram, counts) / n**2
    plug_t = mean_sq - plug_g
    trace = plug_t * n / (n - 1)
    return (plug_g - trace / n, trace), (plug_g, plug_t)


def noise_scale_interval(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    key: jax.Array,
    num_resamples: int = 2000,
    confidence: float = 0.9,
    method: str = "auto",
) -> NoiseScaleInterval:
    """Bootstrap intervals for the population's |G|², tr Σ and B_simple (see module).

    The estimates are ``gradient_noise_scale(..., unbiased=True)``; ``method`` picks how the
    Gram matrix is formed (``example_gradient_gram``). Memory: [n, n] and [R, n].
    """
    _check(confidence, num_resamples)
    n = jax.tree.leaves(batch)[0].shape[0]
    if n < 2:
        raise ValueError(f"batch: {n} example(s); the bootstrap needs at least 2")
    _, _, gram = example_gradient_gram(loss_fn, params, batch, method=method)
    gram = gram.astype(jnp.float32) if gram.dtype != jnp.float64 else gram
    (grad_sq, trace), (plug_g, plug_t) = _noise_from_gram(jnp.ones(n, gram.dtype), gram, n)
    counts = _counts(key, num_resamples, n).astype(gram.dtype)
    (g_r, t_r), _ = _noise_from_gram(counts, gram, n)
    g_lo, g_hi = _basic(grad_sq, g_r, plug_g, confidence)
    t_lo, t_hi = _basic(trace, t_r, plug_t, confidence)
    # B_simple through its reciprocal |G|²/tr Σ, which stays finite as |G|² crosses zero.
    b_lo, b_hi = _inverse(*_basic(grad_sq / trace, g_r / t_r, plug_g / plug_t, confidence))
    return NoiseScaleInterval(Interval(grad_sq, g_lo, g_hi), Interval(trace, t_lo, t_hi),
                              Interval(trace / grad_sq, b_lo, b_hi))


def ratio_interval(
    numerators: jax.Array,
    denominators: jax.Array,
    *,
    key: jax.Array,
    num_resamples: int = 2000,
    confidence: float = 0.9,
    block: int = 1,
) -> Interval:
    """mean(numerators)/mean(denominators) over T measurements [T], with a bootstrap interval.

    Resamples ⌈T/block⌉ blocks of ``block`` consecutive measurements (moving-block bootstrap;
    ``block=1`` is the plain bootstrap of independent measurements). For B_simple from
    two-batch estimates: numerators tr Σ_est, denominators |G|²_est.
    """
    _check(confidence, num_resamples)
    num, den = jnp.asarray(numerators), jnp.asarray(denominators)
    if num.ndim != 1 or num.shape != den.shape:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must both be [T]")
    t = num.shape[0]
    check_int("block", block, 1, t, "measurements")
    num_blocks = -(-t // block)
    starts = jax.random.randint(key, (num_resamples, num_blocks), 0, t - block + 1)
    idx = (starts[..., None] + jnp.arange(block)).reshape(num_resamples, -1)[:, :t]
    recip = den.mean() / num.mean()
    lower, upper = _inverse(*_basic(recip, den[idx].mean(1) / num[idx].mean(1), recip,
                                    confidence))
    return Interval(num.mean() / den.mean(), lower, upper)


def seed_interval(values: xr.DataArray, dim: str = "seed", confidence: float = 0.9) -> xr.Dataset:
    """Mean over ``dim`` (independent seeds) with a Student-t interval.

    Returns a Dataset with ``estimate`` (the mean), ``stderr`` (std with ddof 1 over √k), ``lower`` and
    ``upper``, over the remaining dimensions. NaN (a diverged seed) makes that point NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence!r} must be in (0, 1)")
    if dim not in values.dims:
        raise ValueError(f"dim: {dim!r} is not a dimension of the values {tuple(values.dims)}")
    k = values.sizes[dim]
    if k < 2:
        raise ValueError(f"dim {dim!r} has {k} entry; an interval needs at least 2 seeds")
    mean = values.mean(dim, skipna=False)
    stderr = values.std(dim, ddof=1, skipna=False) / np.sqrt(k)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, k - 1))
    return xr.Dataset({"estimate": mean, "stderr": stderr, "lower": mean - t * stderr,
                       "upper": mean + t * stderr})

