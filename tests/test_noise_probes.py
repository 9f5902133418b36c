"""Per-example gradient norms (fused into backprop) and the noise-scale probes of the sweep.

Ground truth: a loop over single-example gradients; the noise module's exact estimators on the
same minibatch; and the full training set's exact |G|² and tr Σ, which the probe's per-step
estimates must average to when the parameters stay put.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsgd
from jaxsgd.engine.provenance import describe_probes, differences
from jaxsgd.config import Grid, SweepConfig
from jaxsgd.data import linear_regression
from jaxsgd.losses import cross_entropy, mse
from jaxsgd.models import cnn, linear, make_model, mlp
from jaxsgd.measure.noise import hessian_noise_scale, two_batch_noise_scale
from jaxsgd.probes.noise import hessian_noise_probe, noise_scale_probe
from jaxsgd.measure.per_example import example_norms_method, value_grad_and_example_norms
from jaxsgd.engine.sweep import run_sweep
from jaxsgd.engine.training import Group


def _loop_sq_norms(loss_fn, params, batch):
    """Per-example squared norms per leaf by a Python loop over single examples: [B] per leaf."""
    n = jax.tree.leaves(batch)[0].shape[0]
    grad = jax.jit(jax.grad(loss_fn))  # one example at a time: [1, ...] batches
    rows = [grad(params, jax.tree.map(lambda a: a[i:i + 1], batch)) for i in range(n)]
    return jax.tree.map(lambda *g: np.array([float(jnp.sum(jnp.square(x))) for x in g]), *rows)


class _Sequence(nn.Module):
    """Dense applied along a sequence ([B, T, in]): per-example gradients sum over T."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(6)(x.reshape(x.shape[0], 5, 8)))
        return nn.Dense(3)(h.reshape(h.shape[0], -1))


class _Shared(nn.Module):
    """One Dense used twice: its per-example norm is not a sum of two rank-one norms."""

    @nn.compact
    def __call__(self, x):
        layer = nn.Dense(40)
        return nn.Dense(3)(layer(nn.relu(layer(x))))


def _flax_case(module, x):
    params = module.init(jax.random.key(1), x)["params"]
    return params, lambda p, b: cross_entropy(module.apply({"params": p}, b[0]), b[1])


def _cases():
    key = jax.random.key(0)
    x = jax.random.normal(key, (12, 40))
    y = jax.random.randint(jax.random.key(2), (12,), 0, 10)
    for model in (mlp((40,), 10, width=16, depth=2), linear((40,), 10),
                  cnn((40,), 10, channels=(3, 4), dense_width=8)):
        yield model.name, model.init(key), (
            lambda m: lambda p, b: cross_entropy(m.apply(p, b[0]), b[1]))(model), (x, y)
    image = cnn((6, 6, 2), 10, channels=(3,), dense_width=8)
    yield image.name, image.init(key), (
        lambda p, b: cross_entropy(image.apply(p, b[0]), b[1])), (
        jax.random.normal(key, (12, 6, 6, 2)), y)
    params, loss_fn = _flax_case(_Sequence(), x)
    yield "dense over a sequence", params, loss_fn, (x, y % 3)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_fused_example_norms_match_a_loop_over_examples(case):
    _, params, loss_fn, batch = case
    assert "vmap" not in jax.tree.leaves(example_norms_method(loss_fn, params, batch))
    loss, grads, norms = jax.jit(
        lambda p, b: value_grad_and_example_norms(loss_fn, p, b))(params, batch)
    expected = _loop_sq_norms(loss_fn, params, batch)
    for got, want in zip(jax.tree.leaves(norms), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-12)
    ref_loss, ref_grads = jax.value_and_grad(loss_fn)(params, batch)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_shared_layers_plain_jax_and_nonlinear_parameters_are_exact():
    x = jax.random.normal(jax.random.key(0), (6, 40))
    y = jnp.arange(6) % 3
    params, shared = _flax_case(_Shared(), x)
    plain_params = {"w": jnp.ones((40, 3)) * 0.1}

    def plain(p, b):  # pure JAX: no flax layer to intercept
        return cross_entropy(b[0] @ p["w"], b[1])

    for p, loss_fn in ((params, shared), (plain_params, plain)):
        assert "vmap" not in jax.tree.leaves(example_norms_method(loss_fn, p, (x, y)))
        _, _, norms = jax.jit(lambda q, b, f=loss_fn: value_grad_and_example_norms(f, q, b))(
            p, (x, y))
        for got, want in zip(jax.tree.leaves(norms), jax.tree.leaves(_loop_sq_norms(loss_fn, p, (x, y)))):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4)
    with pytest.raises(ValueError, match="method: 'fast'"):
        value_grad_and_example_norms(plain, plain_params, (x, y), method="fast")
    # A parameter used nonlinearly: that leaf alone falls back to vmap(grad), exactly.
    def scaled(p, b):
        return cross_entropy(jnp.exp(p["log_scale"]) * (b[0] @ p["w"]), b[1])

    p = {"w": 0.1 * jax.random.normal(jax.random.key(3), (40, 3)), "log_scale": jnp.asarray(0.3)}
    assert example_norms_method(scaled, p, (x, y)) == {"w": "dense", "log_scale": "vmap"}
    _, _, norms = jax.jit(lambda q, b: value_grad_and_example_norms(scaled, q, b))(p, (x, y))
    for got, want in zip(jax.tree.leaves(norms), jax.tree.leaves(_loop_sq_norms(scaled, p, (x, y)))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4)


# ------------------------------------------------------------------------------- the probes


def _config(**changes):
    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options={"width": 32, "depth": 2}, batch_sizes=(16,), budget=12,
                budget_unit="steps", eval_every=6, grid=Grid(learning_rate=(0.1,), seed=(3,)))
    base.update(changes)
    return SweepConfig(**base)


def _first_minibatch(data, seed, batch_size):
    _, k_data, _ = jax.random.split(jax.random.key(seed), 3)
    idx = jax.random.permutation(jax.random.fold_in(k_data, 0), len(data.x_train))[:batch_size]
    return jnp.asarray(data.x_train)[idx], jnp.asarray(data.y_train)[idx]


@pytest.fixture(scope="module")
def probed_and_plain(mnist1d_small):
    """The same small sweep with the noise probes and without any."""
    c = _config(grid=Grid(learning_rate=(0.1, 0.2), seed=(3, 4)))
    probes = (noise_scale_probe(every=1, microbatches=4), hessian_noise_probe(every=4),
              noise_scale_probe(every=2, name="head", leaves="Dense_2"))
    return (run_sweep(c, data=mnist1d_small, probes=probes, progress=False),
            run_sweep(c, data=mnist1d_small, progress=False))


def test_noise_scale_probe_at_step_zero_equals_the_exact_estimators(mnist1d_small,
                                                                    probed_and_plain):
    m = probed_and_plain[0].metrics
    run = m.sel(batch_size=16, learning_rate=0.1, seed=3)
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    params = model.init(jax.random.split(jax.random.key(3), 3)[0])
    batch = _first_minibatch(mnist1d_small, 3, 16)

    def loss_fn(p, b):
        return cross_entropy(model.apply(p, b[0]), b[1])

    norms = _loop_sq_norms(loss_fn, params, batch)
    small = float(np.mean(sum(jax.tree.leaves(norms))))
    g = jax.jit(jax.grad(loss_fn))(params, batch)
    big = float(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(g)))
    # The probe of the output layer's leaves alone (leaves="Dense_2")
    head = run.isel(head_step=0)
    assert float(head.head_example_sq_norm) == pytest.approx(
        float(np.mean(sum(jax.tree.leaves(norms["Dense_2"])))), rel=1e-4)
    assert float(head.head_batch_grad_sq_norm) == pytest.approx(
        float(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(g["Dense_2"]))), rel=1e-4)
    assert float(head.head_example_sq_norm) < 0.9 * small
    n = len(mnist1d_small.x_train)
    g_sq, trace = two_batch_noise_scale(small, big, 1, 16, n)
    step0 = run.isel(noise_scale_step=0)
    assert float(step0.noise_scale_example_sq_norm) == pytest.approx(small, rel=1e-4)
    assert float(step0.noise_scale_batch_grad_sq_norm) == pytest.approx(big, rel=1e-4)
    assert float(step0.noise_scale_trace_cov) == pytest.approx(float(trace), rel=1e-4)
    assert float(step0.noise_scale_grad_sq_norm) == pytest.approx(float(g_sq), rel=1e-3)
    # One measurement: the debiased EMA is that measurement.
    assert float(step0.noise_scale_b_simple) == pytest.approx(float(trace / g_sq), rel=1e-3)
    micro = jax.tree.map(lambda a: a.reshape(4, 4, *a.shape[1:]), batch)
    grad = jax.jit(jax.grad(loss_fn))
    micro_grads = [grad(params, jax.tree.map(lambda a: a[k], micro)) for k in range(4)]
    micro_sq = np.mean([sum(float(jnp.sum(jnp.square(leaf))) for leaf in jax.tree.leaves(g))
                        for g in micro_grads])
    assert float(step0.noise_scale_micro_sq_norm) == pytest.approx(micro_sq, rel=1e-4)
    # Later steps: b_simple is the ratio of the EMAs of the recorded estimates.
    decay, traces, grads = 0.95, run.noise_scale_trace_cov.values, run.noise_scale_grad_sq_norm.values
    weights = decay ** np.arange(len(traces))[::-1]
    assert float(run.noise_scale_b_simple[-1]) == pytest.approx(
        np.sum(weights * traces) / np.sum(weights * grads), rel=1e-4)
    assert float(run.noise_scale_b_simple[-1]) != pytest.approx(np.mean(traces / grads), rel=1e-2)
    # B_noise at step 0: the unbiased Hessian noise scale of the same minibatch (all examples).
    h = jax.jit(lambda p, b: hessian_noise_scale(loss_fn, p, b, unbiased=True))(params, batch)
    hstep0 = run.isel(hessian_noise_step=0)
    assert float(hstep0.hessian_noise_trace_hessian_cov) == pytest.approx(
        float(h.trace_hessian_cov), rel=1e-3)
    assert float(hstep0.hessian_noise_b_noise) == pytest.approx(float(h.b_noise), rel=1e-3)
    assert list(m.hessian_noise_step.values) == [0, 4, 8]


def test_probes_leave_training_unchanged(probed_and_plain):
    probed, plain = probed_and_plain
    for b in probed.config.batch_sizes:
        for got, want in zip(jax.tree.leaves(probed.params[b]), jax.tree.leaves(plain.params[b])):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_per_step_estimates_average_to_the_training_sets_exact_noise_scale():
    """Parameters held still (a negligible learning rate): under epoch sampling each step's
    estimates are unbiased for the full training set's |G|² and tr Σ, with the finite-data
    correction (N = 256, B = 64: without it |G|² comes out 8% too low)."""
    data = linear_regression(num_train=256, num_test=64, dim=8, noise_std=0.5, cov_decay=1.0)
    c = SweepConfig(data="linear_regression", model="linear", batch_sizes=(64,), budget=800,
                    budget_unit="steps", eval_every=800,
                    grid=Grid(learning_rate=(1e-12,), seed=(0,)))
    m = run_sweep(c, data=data, probes=(noise_scale_probe(),), progress=False).metrics
    run = m.sel(batch_size=64, learning_rate=1e-12, seed=0)
    model = make_model("linear", (8,), 1)
    params = model.init(jax.random.split(jax.random.key(0), 3)[0])
    full = (jnp.asarray(data.x_train), jnp.asarray(data.y_train))
    exact = jaxsgd.gradient_noise_scale(lambda p, b: mse(model.apply(p, b[0]), b[1]), params,
                                        full)
    for name, want in (("trace_cov", exact.trace_cov), ("grad_sq_norm", exact.grad_sq_norm)):
        values = run[f"noise_scale_{name}"].values
        sem = values.std() / np.sqrt(len(values))
        assert abs(values.mean() - float(want)) < 4 * sem + 1e-3 * abs(float(want)), name
        assert values.mean() == pytest.approx(float(want), rel=0.05), name
    small, big = run.noise_scale_example_sq_norm.values, run.noise_scale_batch_grad_sq_norm.values
    uncorrected, _ = two_batch_noise_scale(small, big, 1, 64)  # as if drawn with replacement
    assert float(uncorrected.mean()) < 0.95 * float(exact.grad_sq_norm)


def test_the_step_computes_the_norms_its_probes_ask_for():
    group = lambda *probes: Group(None, None, None, None, None, probes)  # noqa: E731
    head, norm = (noise_scale_probe(leaves=p) for p in ("Dense_2", "LayerNorm"))
    assert group(head).norm_leaves == "(?:Dense_2)"
    assert group(head, norm).norm_leaves == "(?:Dense_2)|(?:LayerNorm)"
    assert group(head, noise_scale_probe()).norm_leaves is None
    assert not group(hessian_noise_probe()).wants_norms
    with pytest.raises(ValueError, match=r"leaves: '\(' is not a regular expression"):
        noise_scale_probe(leaves="(")


def test_probe_options_are_checked_and_guard_resuming(mnist1d_small):
    for bad, match in ((dict(every=0), "every: 0"), (dict(decay=1.0), "decay: 1.0"),
                       (dict(microbatches=1), "microbatches: 1")):
        with pytest.raises(ValueError, match=match):
            noise_scale_probe(**bad)
    with pytest.raises(ValueError, match="num_examples: 1"):
        hessian_noise_probe(num_examples=1)
    with pytest.raises(ValueError, match="microbatches: 5 does not divide the batch size 16"):
        run_sweep(_config(), data=mnist1d_small, probes=(noise_scale_probe(microbatches=5),),
                  progress=False)
    a = {"run": {"probes": describe_probes((noise_scale_probe(decay=0.9),))}}
    b = {"run": {"probes": describe_probes((noise_scale_probe(decay=0.99),))}}
    assert differences(a, b) == ["the probes are [['noise_scale', 1, {'decay': 0.99, "
                                 "'microbatches': None}]] here but [['noise_scale', 1, "
                                 "{'decay': 0.9, 'microbatches': None}]] in the folder"]
