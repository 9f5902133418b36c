"""The gradient noise scale against ground truth (issue 4): brute-force per-example NumPy,
the closed form of Gaussian linear regression, and exact finite-population expectations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxsgd.data import linear_regression, linear_regression_truth
from jaxsgd.losses import cross_entropy, mse
from jaxsgd.models import make_model
from jaxsgd.measure.noise import (batch_noise_factor, gradient_noise_scale, hessian_noise_scale,
                                  minibatch_gradient_error, noise_scale_ema,
                                  two_batch_noise_scale)


def linear_loss(w, batch):
    x, y = batch
    return mse(x @ w, y)


def closed_form(w, truth):
    """|G|², tr Σ, B_simple of ½(xᵀw − y)², x ~ N(0, S), noise σ² (SCIENCE.md)."""
    s, delta = truth.input_cov, w[:, 0] - truth.w_star
    g = s @ delta
    trace = (delta @ s @ delta + truth.noise_std**2) * np.trace(s) + g @ g
    return g @ g, trace, trace / (g @ g)


@pytest.mark.parametrize("unbiased", [False, True])
def test_exact_noise_scale_matches_brute_force_numpy(unbiased):
    rng = np.random.default_rng(0)
    n, d = 48, 6
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 1))
    w = rng.normal(size=(d, 1))
    per_example = x * (x @ w - y)  # g_i = x_i (x_iᵀw − y_i), float64
    mean = per_example.mean(0)
    cov = np.cov(per_example.T, bias=not unbiased)
    grad_sq = mean @ mean - (np.trace(cov) / n if unbiased else 0.0)
    with jax.enable_x64(True):
        ns = gradient_noise_scale(linear_loss, jnp.asarray(w), (jnp.asarray(x), jnp.asarray(y)),
                                  unbiased=unbiased, slice_size=16)
    np.testing.assert_allclose(ns.grad_sq_norm, grad_sq, rtol=1e-5)
    np.testing.assert_allclose(ns.trace_cov, np.trace(cov), rtol=1e-5)
    np.testing.assert_allclose(ns.b_simple, np.trace(cov) / grad_sq, rtol=1e-5)


def test_per_leaf_values_of_an_mlp_match_per_example_loop():
    model = make_model("mlp", (5,), 3, width=8, depth=1)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(20, 5)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, size=20))
    params = model.init(jax.random.key(0))
    loss = lambda p, b: cross_entropy(model.apply(p, b[0]), b[1])
    grads = [jax.grad(loss)(params, (x[i:i + 1], y[i:i + 1])) for i in range(20)]
    ns = gradient_noise_scale(loss, params, (x, y), slice_size=5)
    totals = [0.0, 0.0]
    for path, leaf_trace in jax.tree_util.tree_flatten_with_path(ns.per_leaf.trace_cov)[0]:
        g = np.stack([np.ravel(_at(gr, path)) for gr in grads]).astype(np.float64)
        mean_sq = float(g.mean(0) @ g.mean(0))
        trace = float(np.mean(np.sum(g**2, 1)) - mean_sq)
        np.testing.assert_allclose(leaf_trace, trace, rtol=1e-4)
        np.testing.assert_allclose(_at(ns.per_leaf.grad_sq_norm, path), mean_sq, rtol=1e-4)
        totals[0] += mean_sq
        totals[1] += trace
    np.testing.assert_allclose(ns.grad_sq_norm, totals[0], rtol=1e-4)
    np.testing.assert_allclose(ns.b_simple, totals[1] / totals[0], rtol=1e-4)


@pytest.mark.parametrize("method, slice_size", [("auto", None), ("auto", 8), ("vmap", 8)])
def test_fused_noise_scale_equals_exhaustive_per_example_gradients(method, slice_size):
    """The default path fuses |g_i|² into one backward pass (a flax MLP allows it); it equals
    every example's gradient computed alone, in float64, to 1e-5."""
    from jaxsgd.measure.per_example import example_norms_method

    with jax.enable_x64(True):
        model = make_model("mlp", (6,), 3, width=16, depth=2, activation="tanh")
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.normal(size=(32, 6)))
        y = jnp.asarray(rng.integers(0, 3, size=32))
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.init(jax.random.key(1)))
        loss = lambda p, b: cross_entropy(model.apply(p, b[0]), b[1])  # noqa: E731
        assert "vmap" not in jax.tree.leaves(example_norms_method(loss, params, (x, y)))
        flat = jax.jit(jax.vmap(lambda xi, yi: ravel_pytree(jax.grad(loss)(
            params, (xi[None], yi[None])))[0]))(x, y)
        g = np.asarray(flat, np.float64)
        for unbiased in (False, True):
            ns = jax.jit(lambda p: gradient_noise_scale(loss, p, (x, y), unbiased=unbiased,
                                                        method=method,
                                                        slice_size=slice_size))(params)
            mean, trace = g.mean(0), np.trace(np.cov(g.T, bias=not unbiased))
            grad_sq = mean @ mean - (trace / 32 if unbiased else 0.0)
            np.testing.assert_allclose(ns.grad_sq_norm, grad_sq, rtol=1e-5)
            np.testing.assert_allclose(ns.trace_cov, trace, rtol=1e-5)
            np.testing.assert_allclose(ns.b_simple, trace / grad_sq, rtol=1e-5)


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_exact_noise_scale_matches_closed_form_of_linear_regression():
    data = linear_regression(num_train=2**17, num_test=16, dim=8, noise_std=0.5, cov_decay=1.0)
    truth = linear_regression_truth(dim=8, noise_std=0.5, cov_decay=1.0)
    w = (truth.w_star + 0.3)[:, None]
    g_sq, trace, b_simple = closed_form(w, truth)
    ns = gradient_noise_scale(linear_loss, jnp.asarray(w, jnp.float32),
                              (jnp.asarray(data.x_train), jnp.asarray(data.y_train)),
                              slice_size=2**13)
    assert abs(float(ns.grad_sq_norm) / g_sq - 1) < 0.03
    assert abs(float(ns.trace_cov) / trace - 1) < 0.03
    assert abs(float(ns.b_simple) / b_simple - 1) < 0.03


def test_two_batch_estimator_matches_closed_form():
    """Fresh Gaussian batches (the population itself): averaged estimates within 3%."""
    truth = linear_regression_truth(dim=8, noise_std=0.5, cov_decay=1.0)
    w = jnp.asarray((truth.w_star + 0.3)[:, None], jnp.float32)
    g_sq, trace, b_simple = closed_form(np.asarray(w, np.float64), truth)
    scale = jnp.asarray(np.sqrt(np.diag(truth.input_cov)), jnp.float32)
    b_small, b_big, draws = 4, 64, 20000

    def norms(key):
        kx, ke = jax.random.split(key)
        x = jax.random.normal(kx, (b_big, 8)) * scale
        y = x @ jnp.asarray(truth.w_star, jnp.float32)[:, None] + 0.5 * jax.random.normal(
            ke, (b_big, 1))
        big = jax.grad(linear_loss)(w, (x, y))
        small = jax.grad(linear_loss)(w, (x[:b_small], y[:b_small]))
        return jnp.sum(small**2), jnp.sum(big**2)

    small, big = jax.jit(jax.vmap(norms))(jax.random.split(jax.random.key(0), draws))
    est_g, est_trace = two_batch_noise_scale(small.mean(), big.mean(), b_small, b_big)
    assert abs(float(est_g) / g_sq - 1) < 0.03
    assert abs(float(est_trace) / trace - 1) < 0.03
    assert abs(float(est_trace / est_g) / b_simple - 1) < 0.03


def test_finite_data_correction_is_exact_for_batches_without_replacement():
    """Batches drawn without replacement from N examples: with num_train the estimator's
    expectation is the finite set's exact |G|² and tr Σ (1/N); without, it is biased."""
    rng = np.random.default_rng(2)
    n, d, b_small, b_big = 40, 3, 5, 30
    x, y, w = rng.normal(size=(n, d)), rng.normal(size=(n, 1)), rng.normal(size=(d, 1))
    g = x * (x @ w - y)
    exact_g, exact_trace = g.mean(0) @ g.mean(0), np.trace(np.cov(g.T, bias=True))
    # Exact expectations of |G_B|² over all batches without replacement (closed form of the
    # finite-population variance of a mean), checked against sampling.
    def expected_sq(b):
        return exact_g + exact_trace / b * (n - b) / (n - 1)
    sampled = np.mean([np.sum(g[rng.permutation(n)[:b_small]].mean(0)**2) for _ in range(40000)])
    assert abs(sampled / expected_sq(b_small) - 1) < 0.01
    est_g, est_trace = two_batch_noise_scale(expected_sq(b_small), expected_sq(b_big),
                                             b_small, b_big, num_train=n)
    np.testing.assert_allclose([est_g, est_trace], [exact_g, exact_trace], rtol=1e-5)
    naive_g, _ = two_batch_noise_scale(expected_sq(b_small), expected_sq(b_big), b_small, b_big)
    assert abs(naive_g / exact_g - 1) > 0.05  # the correction matters at B close to N


def test_measured_minibatch_error_matches_every_subset_enumerated():
    """E|g_B − G|² over random draws against its exact value from all C(n, B) minibatches
    (exhaustive per-example gradients in float64), within sampling error; and the exact value
    is tr Σ/B · (n − B)/(n − 1)."""
    from itertools import combinations

    rng = np.random.default_rng(3)
    n, d = 10, 3
    x, y, w = rng.normal(size=(n, d)), rng.normal(size=(n, 1)), rng.normal(size=(d, 1))
    g = x * (x @ w - y)  # per-example gradients of ½(xᵀw − y)², [n, d]
    full = g.mean(0)
    sizes = (1, 2, 5, 9, 10)
    exact = np.array([np.mean([np.sum((g[list(c)].mean(0) - full) ** 2)
                               for c in combinations(range(n), b)]) for b in sizes])
    trace = np.trace(np.cov(g.T, bias=True))
    np.testing.assert_allclose(exact, trace * np.asarray(batch_noise_factor(np.array(sizes), n)),
                               rtol=1e-5, atol=1e-12)
    batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    error = jax.jit(lambda p: minibatch_gradient_error(linear_loss, p, batch, sizes,
                                                       key=jax.random.key(0),
                                                       num_draws=2000))(
        jnp.asarray(w, jnp.float32))
    mean, se = np.asarray(error.mean), np.asarray(error.se)
    assert np.all(np.abs(mean[:-1] - exact[:-1]) < 4 * se[:-1]), (mean, exact, se)
    assert np.all(np.abs(mean[:-1] / exact[:-1] - 1) < 0.1)
    assert mean[-1] < 1e-10 * exact[0]  # B = n: the full gradient itself
    with pytest.raises(ValueError, match=r"batch_sizes: 11 is not in 1..10"):
        minibatch_gradient_error(linear_loss, jnp.asarray(w), batch, (11,), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"num_draws: 1 is not an integer ≥ 2"):
        minibatch_gradient_error(linear_loss, jnp.asarray(w), batch, (2,), key=jax.random.key(0),
                                 num_draws=1)


def test_ema_tracker_averages_numerator_and_denominator_separately():
    ema = noise_scale_ema(decay=0.5)
    state = ema.init()
    # Two steps whose per-step ratios average to something else than the ratio of averages.
    steps = [(3.0, 1.0), (5.0, 4.6)]  # (|G_small|², |G_big|²) with B_small=1, B_big=2
    per_step = []
    for small, big in steps:
        state, ns = ema.update(state, small, big, 1, 2)
        per_step.append(two_batch_noise_scale(small, big, 1, 2))
    g = np.array([p[0] for p in per_step])
    s = np.array([p[1] for p in per_step])
    weights = np.array([0.5 * 0.5, 0.5]) / (1 - 0.5**2)  # debiased EMA weights
    np.testing.assert_allclose(ns.grad_sq_norm, weights @ g, rtol=1e-6)
    np.testing.assert_allclose(ns.trace_cov, weights @ s, rtol=1e-6)
    np.testing.assert_allclose(ns.b_simple, (weights @ s) / (weights @ g), rtol=1e-6)
    assert abs(float(ns.b_simple) - float(weights @ (s / g))) > 0.1
    with pytest.raises(ValueError, match="decay: 1.0"):
        noise_scale_ema(decay=1.0)


def test_bad_input_is_named():
    x, y = jnp.ones((6, 2)), jnp.ones((6, 1))
    w = jnp.zeros((2, 1))
    with pytest.raises(ValueError, match="slice_size: 4 must divide the batch size 6"):
        gradient_noise_scale(linear_loss, w, (x, y), slice_size=4)
    with pytest.raises(ValueError, match="one shared leading example axis"):
        gradient_noise_scale(linear_loss, w, (x, y[:5]))
    with pytest.raises(ValueError, match="batch: 1 example"):
        gradient_noise_scale(linear_loss, w, (x[:1], y[:1]), unbiased=True)


def test_hessian_noise_scale_matches_dense_hessian_and_covariance():
    """Small MLP in float64: explicit Hessian and per-example covariance, exact to 1e-8."""
    with jax.enable_x64(True):
        model = make_model("mlp", (4,), 3, width=5, depth=1, activation="tanh")
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=(12, 4)))
        y = jnp.asarray(rng.integers(0, 3, size=12))
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                              model.init(jax.random.key(0)))
        flat, unravel = ravel_pytree(params)
        loss = lambda p, b: cross_entropy(model.apply(p, b[0]), b[1])
        full = lambda f: loss(unravel(f), (x, y))
        hessian = np.asarray(jax.jit(jax.hessian(full))(flat))  # jit: eager op-by-op is slow
        # every example's gradient, exhaustively (one compiled vmap, not 12 eager traces)
        per_example = np.asarray(jax.jit(jax.vmap(jax.grad(
            lambda f, xi, yi: loss(unravel(f), (xi[None], yi[None]))), (None, 0, 0)))(flat, x, y))
        g = per_example.mean(0)
        cov = np.cov(per_example.T, bias=True)
        ns = jax.jit(lambda p: hessian_noise_scale(loss, p, (x, y), slice_size=4))(params)
        np.testing.assert_allclose(ns.grad_hessian_grad, g @ hessian @ g, rtol=1e-8)
        np.testing.assert_allclose(ns.trace_hessian_cov, np.trace(hessian @ cov), rtol=1e-8)
        np.testing.assert_allclose(ns.b_noise, np.trace(hessian @ cov) / (g @ hessian @ g),
                                   rtol=1e-8)
        np.testing.assert_allclose(ns.b_simple, np.trace(cov) / (g @ g), rtol=1e-8)
        np.testing.assert_allclose(ns.max_learning_rate, (g @ g) / (g @ hessian @ g), rtol=1e-8)
        # A subset of examples: an unbiased estimate (mean over many keys within 3 s.e.).
        keys = jax.random.split(jax.random.key(1), 200)
        subset = jax.jit(jax.vmap(lambda k: hessian_noise_scale(loss, params, (x, y), key=k,
                                                        num_examples=3).trace_hessian_cov))(keys)
        subset = np.asarray(subset)
        assert abs(subset.mean() - np.trace(hessian @ cov)) < 3 * subset.std() / np.sqrt(200)
