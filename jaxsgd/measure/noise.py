"""The gradient noise scale (McCandlish et al. 2018), exact and from batch-gradient norms.

Notation (SCIENCE.md): per-example gradients g_i of a mean loss, G = mean_i g_i,
Σ = Cov(g_i), B_simple = tr Σ / |G|².

* ``gradient_noise_scale(loss_fn, params, batch)`` — exact over a batch of n examples treated
  as the population: |G|² and tr Σ = mean_i |g_i|² − |G|² (1/n). With ``unbiased=True`` the batch
  is a sample of a larger population instead: tr Σ gets n/(n − 1) and |G|² loses tr Σ/n, the
  unbiased estimators of the population's tr Σ and |E g|². The per-example squared norms come
  fused into one backward pass where the model allows it (``jaxsgd.measure.per_example``),
  else from ``vmap(grad)``; in slices of ``slice_size`` examples (``lax.map``) either way.
  Also per parameter leaf (``per_leaf``).
* ``two_batch_noise_scale(...)`` — the unbiased estimator from the squared norms of two batch
  gradients of sizes B_small < B_big, with the finite-data correction for batches drawn
  without replacement from N examples (E|G_B|² = |G|² + tr Σ/B · (N − B)/(N − 1)).
* ``hessian_noise_scale(loss_fn, params, batch, key=key)`` — B_noise = tr(HΣ)/(GᵀHG) with
  Hessian-vector products (forward-over-reverse): tr(HΣ) = mean_i (g_i − G)ᵀH(g_i − G) over
  every example, or an unbiased estimate from ``num_examples`` of them drawn with ``key``;
  also ε_max = |G|²/(GᵀHG), the optimal step of the full gradient.
* ``minibatch_gradient_error(loss_fn, params, batch, batch_sizes, key=key)`` — the error
  E|g_B − G|² of random minibatches of each size, measured over draws (mean and standard
  error), to set against tr Σ/B · (n − B)/(n − 1).
* ``noise_scale_ema(decay)`` — an optax-style ``(init, update)`` pair that smooths the two
  estimates with *separate* exponential moving averages and reports EMA(tr Σ)/EMA(|G|²), never
  the mean of per-step ratios (biased, and |G|²_est is often negative on a single step).

Every function is pure and works under ``jit`` and ``vmap`` (e.g. over a sweep's runs).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxsgd._util import batch_size as _batch_size
from jaxsgd.measure.per_example import METHODS, selected_leaves, value_grad_and_example_norms

PyTree = Any


class NoiseScale(NamedTuple):
    """Noise-scale quantities (scalars, or per leaf in ``per_leaf``).

    grad_sq_norm: |G|² (squared norm of the mean gradient).
    trace_cov: tr Σ (total variance of per-example gradients).
    b_simple: tr Σ / |G|², in examples.
    per_leaf: the same three for each parameter leaf, as pytrees shaped like ``params``
        (``None`` where not computed).
    """

    grad_sq_norm: jax.Array
    trace_cov: jax.Array
    b_simple: jax.Array
    per_leaf: "NoiseScale | None" = None


def per_example_gradient_moments(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    slice_size: int | None = None,
    method: str = "auto",
    leaves: str | None = None,
) -> tuple[PyTree, PyTree]:
    """(Σ_i g_i, Σ_i |g_i|² per leaf) over the n examples of ``batch``.

    ``loss_fn(params, batch)`` is a mean loss; g_i is its gradient on example i alone. The sums
    are accumulated over slices of ``slice_size`` examples (default: all at once); n must be
    a multiple of it. ``method`` (``jaxsgd.measure.per_example``): "auto" computes |g_i|² in
    one tapped backward pass from the loss's jaxpr (about the cost of one gradient; exact
    ``vmap(grad)`` for the leaves it cannot prove), "vmap" from explicit per-example gradients
    (about n single-example gradients). ``leaves`` (a regular expression on the leaf paths,
    ``jaxsgd.measure.per_example.selected_leaves``): the squared norms of the others are NaN.
    """
    if method not in METHODS:
        raise ValueError(f"method: {method!r}; known: {', '.join(METHODS)}")
    n = _batch_size(batch)
    size = n if slice_size is None else slice_size
    if size < 1 or n % size:
        raise ValueError(f"slice_size: {slice_size!r} must divide the batch size {n}")

    selected_leaves(params, leaves)  # a bad pattern fails here, before any compute

    def moments(examples):
        # the slice's mean gradient and every example's |g_i|² (one backward pass for "auto")
        _, mean, norms = value_grad_and_example_norms(loss_fn, params, examples, method=method,
                                                      leaves=leaves)
        return (jax.tree.map(lambda g: g * size, mean), jax.tree.map(jnp.sum, norms))

    slices = jax.tree.map(lambda a: a.reshape(n // size, size, *a.shape[1:]), batch)
    sums, squares = jax.lax.map(moments, slices)
    return (jax.tree.map(lambda s: jnp.sum(s, axis=0), sums),
            jax.tree.map(lambda s: jnp.sum(s, axis=0), squares))


def _finish(grad_sq, mean_sq, n, unbiased):
    trace = mean_sq - grad_sq
    if unbiased:
        trace = trace * n / (n - 1)
        grad_sq = grad_sq - trace / n
    return grad_sq, trace, trace / grad_sq


def gradient_noise_scale(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    unbiased: bool = False,
    slice_size: int | None = None,
    method: str = "auto",
    leaves: str | None = None,
) -> NoiseScale:
    """Exact |G|², tr Σ and B_simple over ``batch`` from per-example gradients (see module).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch's examples.
      params: parameter pytree.
      batch: pytree of arrays with a leading example axis of size n (≥ 2 when unbiased).
      unbiased: treat the batch as a sample (n/(n−1) and the |G|² bias correction).
      slice_size: examples per slice (bounds memory); must divide n.
      method: how per-example squared norms are computed (``per_example_gradient_moments``):
        "auto" fuses them into one backward pass when the model allows it (about the cost of
        one gradient; ``benchmarks/noise_scale.py``), else explicit ``vmap(grad)``.
      leaves: a regular expression on the leaf paths ("LayerNorm_0/scale"): the noise scale of
        the parameters it matches alone, e.g. "LayerNorm" for the proxy of Gray et al. 2024;
        ``per_leaf`` is NaN for the others. None: every leaf.
    """
    n = _batch_size(batch)
    if unbiased and n < 2:
        raise ValueError(f"batch: {n} example(s); the unbiased noise scale needs at least 2")
    sums, squares = per_example_gradient_moments(loss_fn, params, batch, slice_size=slice_size,
                                                 method=method, leaves=leaves)
    leaf_grad_sq = jax.tree.map(lambda s: jnp.sum(jnp.square(s / n)), sums)
    leaf_mean_sq = jax.tree.map(lambda q: q / n, squares)
    per_leaf = NoiseScale(*(
        jax.tree.map(lambda g, m, i=i: _finish(g, m, n, unbiased)[i], leaf_grad_sq, leaf_mean_sq)
        for i in range(3)))
    keep = selected_leaves(params, leaves)
    total = _finish(sum(g for g, k in zip(jax.tree.leaves(leaf_grad_sq), keep) if k),
                    sum(m for m, k in zip(jax.tree.leaves(leaf_mean_sq), keep) if k), n,
                    unbiased)
    return NoiseScale(*total, per_leaf=per_leaf)


def batch_noise_factor(batch_size, num_train=None):
    """The factor c(B) in E|G_B|² = |G|² + c(B)·tr Σ: 1/B, or (N − B)/((N − 1)·B) for a batch
    drawn without replacement from N examples (Σ with the population's 1/N normalisation)."""
    b = jnp.asarray(batch_size, jnp.float32)
    if num_train is None:
        return 1.0 / b
    return (num_train - b) / ((num_train - 1.0) * b)


class GradientError(NamedTuple):
    """Measured minibatch gradient error per batch size: mean [K] = E|g_B − G|², se [K] its
    standard error over the draws, draws the number of minibatches per batch size."""

    mean: jax.Array
    se: jax.Array
    draws: int


def minibatch_gradient_error(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    batch_sizes,
    *,
    key: jax.Array,
    num_draws: int = 64,
    draws_at_once: int = 4096,
) -> GradientError:
    """E|g_B − G|², measured: for each B of ``batch_sizes``, ``num_draws`` minibatches of B
    examples drawn uniformly without replacement from the n examples of ``batch``
    (independently per draw), each gradient against G, the gradient over all n.

    The ground truth it tests, for B ≤ n: E|g_B − G|² = tr Σ · (n − B)/((n − 1)·B) with tr Σ
    over the n examples (``gradient_noise_scale(...).trace_cov × batch_noise_factor(B, n)``).
    Draws go ``draws_at_once`` examples at a time (``lax.map`` in batches: memory). Each B is
    one program; the whole function also runs under ``jit`` (``batch_sizes`` static).
    """
    n = _batch_size(batch)
    sizes = [int(b) for b in batch_sizes]
    for b in sizes:
        if not 1 <= b <= n:
            raise ValueError(f"batch_sizes: {b!r} is not in 1..{n} (the examples of batch)")
    if not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"num_draws: {num_draws!r} is not an integer ≥ 2 (a standard error "
                         f"needs two draws)")
    grad = jax.grad(loss_fn)
    full = grad(params, batch)
    means, ses = [], []
    for i, b in enumerate(sizes):
        def error(k, b=b):
            idx = jax.random.permutation(k, n)[:b]
            g = grad(params, jax.tree.map(lambda a: a[idx], batch))
            return sum(jnp.sum(jnp.square(x - y))
                       for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(full)))

        keys = jax.random.split(jax.random.fold_in(key, i), num_draws)
        errors = jax.lax.map(error, keys, batch_size=max(1, min(num_draws, draws_at_once // b)))
        means.append(jnp.mean(errors))
        ses.append(jnp.std(errors, ddof=1) / jnp.sqrt(num_draws))
    return GradientError(jnp.stack(means), jnp.stack(ses), num_draws)


def two_batch_noise_scale(small_sq_norm, big_sq_norm, b_small, b_big, num_train=None):
    """Unbiased (|G|²_est, tr Σ_est) from |G_small|² and |G_big|² (McCandlish et al., App. A).

    tr Σ_est = (|G_small|² − |G_big|²) / (c(B_small) − c(B_big)),
    |G|²_est = |G_big|² − c(B_big)·tr Σ_est, with c from ``batch_noise_factor`` (1/B without
    ``num_train``, which reproduces the paper's (B_big|G_big|² − B_small|G_small|²)/(B_big −
    B_small)). Single estimates are noisy and |G|²_est can be negative: average (or EMA) the two
    before taking their ratio. Returns (grad_sq_norm, trace_cov), same shapes as the inputs.
    """
    c_small = batch_noise_factor(b_small, num_train)
    c_big = batch_noise_factor(b_big, num_train)
    trace = (small_sq_norm - big_sq_norm) / (c_small - c_big)
    return big_sq_norm - c_big * trace, trace


class NoiseScaleEMAState(NamedTuple):
    """Running EMAs of |G|²_est and tr Σ_est, and the number of updates (for debiasing)."""

    grad_sq_norm: jax.Array
    trace_cov: jax.Array
    count: jax.Array


class NoiseScaleEMA(NamedTuple):
    """``init() -> state``; ``update(state, small_sq, big_sq, b_small, b_big) -> (state,
    NoiseScale)`` with the debiased EMAs and their ratio B_simple."""

    init: Callable[[], NoiseScaleEMAState]
    update: Callable[..., tuple[NoiseScaleEMAState, NoiseScale]]


def noise_scale_ema(decay: float = 0.99, num_train: int | None = None) -> NoiseScaleEMA:
    """Track B_simple during training from two batch-gradient norms per step (see module)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay: {decay!r} must be in [0, 1)")

    def init() -> NoiseScaleEMAState:
        zero = jnp.zeros((), jnp.float32)
        return NoiseScaleEMAState(zero, zero, jnp.zeros((), jnp.int32))

    def update(state, small_sq_norm, big_sq_norm, b_small, b_big):
        g, s = two_batch_noise_scale(small_sq_norm, big_sq_norm, b_small, b_big, num_train)
        g_ema = decay * state.grad_sq_norm + (1 - decay) * g
        s_ema = decay * state.trace_cov + (1 - decay) * s
        count = state.count + 1
        debias = 1 - decay ** count.astype(jnp.float32)
        g_hat, s_hat = g_ema / debias, s_ema / debias
        return NoiseScaleEMAState(g_ema, s_ema, count), NoiseScale(g_hat, s_hat, s_hat / g_hat)

    return NoiseScaleEMA(init=init, update=update)


class HessianNoiseScale(NamedTuple):
    """B_noise and what it is made of (scalars; population normalisation 1/n).

    grad_sq_norm |G|²; trace_cov tr Σ; b_simple = tr Σ/|G|²; grad_hessian_grad GᵀHG;
    trace_hessian_cov tr(HΣ); b_noise = tr(HΣ)/(GᵀHG), in examples; max_learning_rate
    ε_max = |G|²/(GᵀHG), the loss-minimising step along −G of the local quadratic model.
    trace_hessian_cov_stderr: standard error of tr(HΣ) from drawing a subset of the examples
    (finite-population corrected: zero when every example is used). For an interval on
    B_noise itself, estimate it on several batches (or steps) and use
    ``jaxsgd.analysis.intervals.ratio_interval`` over (tr(HΣ), GᵀHG).
    """

    grad_sq_norm: jax.Array
    trace_cov: jax.Array
    b_simple: jax.Array
    grad_hessian_grad: jax.Array
    trace_hessian_cov: jax.Array
    b_noise: jax.Array
    max_learning_rate: jax.Array
    trace_hessian_cov_stderr: jax.Array


def _tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def hessian_noise_scale(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    key: jax.Array | None = None,
    num_examples: int | None = None,
    slice_size: int | None = None,
    unbiased: bool = False,
    method: str = "auto",
) -> HessianNoiseScale:
    """B_noise = tr(HΣ)/(GᵀHG) over ``batch`` (see module docstring).

    G, Σ and H are those of the mean loss over the batch's n examples. tr(HΣ) costs one
    Hessian-vector product per example used: all n by default, or ``num_examples`` drawn
    without replacement with ``key`` (an unbiased estimate). ``slice_size`` bounds memory to
    that many per-example gradients and HVPs at a time and must divide the examples used.

    ``unbiased=True`` treats the batch as a sample of a larger population, as
    ``gradient_noise_scale`` does: tr Σ and tr(HΣ) get n/(n − 1), and |G|² and GᵀHG lose
    tr Σ/n and tr(HΣ)/n, the noise the batch mean adds to them. This is exact for a fixed H
    (H is still the batch's own Hessian; its sampling error is not corrected).
    ``method``: how G and tr Σ are computed, as in ``gradient_noise_scale``.
    """
    n = _batch_size(batch)
    if num_examples is not None and not 1 <= num_examples <= n:
        raise ValueError(f"num_examples: {num_examples!r} must be in [1, {n}]")
    if num_examples is not None and key is None:
        raise ValueError("key: needed to draw num_examples examples")
    if unbiased and n < 2:
        raise ValueError(f"batch: {n} example(s); the unbiased noise scale needs at least 2")
    sums, squares = per_example_gradient_moments(loss_fn, params, batch, slice_size=slice_size,
                                                 method=method)
    mean = jax.tree.map(lambda s: s / n, sums)
    grad_sq = _tree_vdot(mean, mean)
    trace = sum(jax.tree.leaves(squares)) / n - grad_sq

    def hvp(v):
        return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))[1]

    ghg = _tree_vdot(mean, hvp(mean))
    used = batch
    if num_examples is not None:
        idx = jax.random.choice(key, n, (num_examples,), replace=False)
        used = jax.tree.map(lambda a: a[idx], batch)
    m = _batch_size(used)
    size = m if slice_size is None else slice_size
    if size < 1 or m % size:
        raise ValueError(f"slice_size: {slice_size!r} must divide the examples used ({m})")

    def curvature(examples):
        def one(example):
            g = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))
            d = jax.tree.map(jnp.subtract, g, mean)
            return _tree_vdot(d, hvp(d))
        return jax.vmap(one)(examples)

    slices = jax.tree.map(lambda a: a.reshape(m // size, size, *a.shape[1:]), used)
    forms = jax.lax.map(curvature, slices).reshape(m)  # (g_i − G)ᵀH(g_i − G) per example
    trace_h = jnp.mean(forms)
    # Sampling m of n without replacement: Var(mean) = (1 − m/n)·s²/m.
    spread = jnp.var(forms, ddof=1) if m > 1 else jnp.zeros_like(trace_h)
    stderr = jnp.sqrt((1.0 - m / n) * spread / m)
    if unbiased:
        trace, trace_h, stderr = (v * n / (n - 1) for v in (trace, trace_h, stderr))
        grad_sq, ghg = grad_sq - trace / n, ghg - trace_h / n
    return HessianNoiseScale(grad_sq, trace, trace / grad_sq, ghg, trace_h, trace_h / ghg,
                             grad_sq / ghg, stderr)
