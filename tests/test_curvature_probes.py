"""λ_max tracked during training (``jaxsgd.probes.curvature``), inside real sweeps.

Ground truth: the exact top eigenvalue of the Hessian, from ``numpy.linalg.eigh`` — in closed
form for linear regression with MSE (H = X̃ᵀX̃/n with X̃ = [X, 1], constant in θ), and from a
dense float64 ``jax.hessian`` of a small MLP at parameters reproduced by a plain sweep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxsgd.engine.provenance import describe_probes, differences
from jaxsgd.config import Grid, SweepConfig
from jaxsgd.probes.curvature import lambda_max_probe, lanczos_top_eigenpair
from jaxsgd.data import from_arrays
from jaxsgd.losses import cross_entropy
from jaxsgd.models import make_model
from jaxsgd.engine.sweep import run_sweep
from jaxsgd.engine.training import run_keys

# ------------------------------------------------------------------ linear regression (exact)

N, DIM, FIXED = 128, 24, 32


@pytest.fixture(scope="module")
def regression():
    """Inputs with variances 3·i^-0.7 (top eigenvalue ≈ 3, next ≈ 1.9: a modest gap)."""
    rng = np.random.default_rng(0)
    scale = np.sqrt(3.0 * np.arange(1, DIM + 1) ** -0.7)
    x = (rng.standard_normal((N + 32, DIM)) * scale).astype(np.float32)
    y = (x @ rng.standard_normal(DIM) / np.sqrt(DIM) + 0.3 * rng.standard_normal(N + 32))
    data = from_arrays(x[:N], y[:N, None].astype(np.float32), x[N:],
                       y[N:, None].astype(np.float32), num_classes=0)
    return data


def _exact_lambda_max(x: np.ndarray) -> float:
    """λ_max of the Hessian of mean_i ½(wᵀx_i + b − y_i)² over (w, b): X̃ᵀX̃/n."""
    xt = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
    return float(np.linalg.eigvalsh(xt.T @ xt / len(x))[-1])


def _regression_config(batch_size: int, steps: int) -> SweepConfig:
    return SweepConfig(data="arrays", model="linear", batch_sizes=(batch_size,), budget=steps,
                       budget_unit="steps", eval_every=steps,
                       grid=Grid(learning_rate=(0.01, 0.1), seed=(0, 1)))


def _minibatch(seed: int, step: int, batch_size: int) -> np.ndarray:
    """Indices of a run's minibatch at ``step`` (epoch sampling, ``jaxsgd.engine.sampling``)."""
    _, k_data, _ = jax.random.split(jax.random.key(seed), 3)
    epoch, position = divmod(step, N // batch_size)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, epoch), N))
    return perm[position * batch_size:(position + 1) * batch_size]


@pytest.fixture(scope="module")
def regression_sweep(regression):
    """SGD at B = 16, 2 learning rates x 2 seeds: the probe on each step's minibatch (with a
    cold reference) and on a fixed batch of 32 training examples."""
    fixed = (regression.x_train[:FIXED], regression.y_train[:FIXED])
    probes = (lambda_max_probe(every=2, num_iterations=1, reference_iterations=DIM + 1),
              lambda_max_probe(every=2, num_iterations=2, data=fixed, name="fixed"))
    return run_sweep(_regression_config(16, 40), data=regression, probes=probes,
                     progress=False).metrics.isel(batch_size=0)


def test_warm_start_converges_to_the_exact_lambda_max_of_linear_regression(regression,
                                                                            regression_sweep):
    """On a fixed batch H is constant: two Lanczos steps per measurement cannot find λ_max
    from a random start, but warm-started they reach it within a few measurements."""
    m = regression_sweep
    exact = _exact_lambda_max(regression.x_train[:FIXED])
    value, residual = m.fixed_value.values, m.fixed_residual.values  # [lr, seed, 20 points]
    err = np.abs(value - exact) / exact
    assert value.shape == (2, 2, 20)
    assert list(m.fixed_step.values) == list(range(0, 40, 2))
    assert np.all(value <= exact * (1 + 1e-5))  # a Ritz value never exceeds λ_max
    assert np.all(err[..., 0] > 1e-3)  # cold, two iterations: not converged
    assert np.all(residual[..., 0] > 1e-2)  # ... and its residual says so
    assert err[..., -5:].max() < 1e-4, err[..., -5:].max()
    assert residual[..., -1].max() < 1e-2


def test_default_probe_measures_each_steps_own_minibatch(regression, regression_sweep):
    """The cold reference at every measured step equals λ_max of that step's minibatch of 16
    (different at each step, and from the training set's). Its 25 Lanczos steps exceed the
    rank (16) of a 16-example Hessian: the Krylov space closes early, cleanly."""
    ref = regression_sweep.lambda_max_reference
    full = _exact_lambda_max(regression.x_train)
    for seed in (0, 1):
        want = np.array([_exact_lambda_max(regression.x_train[_minibatch(seed, t, 16)])
                         for t in range(0, 40, 2)])
        assert np.ptp(want) > 0.2 * full and np.all(np.abs(want - full) > 1e-3 * full)
        for lr in (0.01, 0.1):
            np.testing.assert_allclose(ref.sel(seed=seed, learning_rate=lr).values, want,
                                       rtol=1e-4)
    assert regression_sweep.lambda_max_reference_residual.values.max() < 1e-3


def test_lanczos_top_eigenpair_residual_breakdown_and_negative_eigenvalues():
    """Against dense matrices: the reported residual equals ‖Ay − θy‖; a rank-2 matrix whose
    negative eigenvalue is the larger in magnitude (top is 2, not −5; the Krylov space closes
    after 2 steps); and A = 0."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 30))
    a = (a + a.T) / 2
    u = np.linalg.qr(rng.standard_normal((30, 2)))[0]
    low = (u * np.array([2.0, -5.0])) @ u.T
    start = jnp.asarray(rng.standard_normal(30), jnp.float32)

    @jax.jit
    def run(v):
        def product(m):
            return lambda x: jnp.asarray(m, jnp.float32) @ x

        return (lanczos_top_eigenpair(product(a), v, 4), lanczos_top_eigenpair(product(low), v, 3),
                lanczos_top_eigenpair(lambda x: 0 * x, v, 2))

    short, r, zero = run(start)
    y = np.asarray(short.vector, np.float64)
    assert float(short.residual) == pytest.approx(np.linalg.norm(a @ y - float(short.value) * y),
                                                  rel=1e-3)
    assert float(short.value) < np.linalg.eigvalsh(a)[-1]  # four steps: strictly inside
    assert float(r.value) == pytest.approx(2.0, rel=1e-5)
    assert np.all(np.isfinite(np.asarray(r.vector)))
    assert abs(float(np.asarray(r.next_start) @ (u[:, 0]))) > 0.999  # power step: the top one
    assert float(zero.value) == 0.0 and np.all(np.isfinite(np.asarray(zero.next_start)))


# ------------------------------------------------------------------------------ a small MLP

WIDTH, STEPS, EVERY, NUM_TRAIN = 8, 24, 2, 800
MLP = make_model("mlp", (40,), 10, width=WIDTH, depth=2)


def _mlp_loss(params, batch):
    return cross_entropy(MLP.apply(params, batch[0]), batch[1])


@pytest.fixture(scope="module")
def mlp_sweep(mnist1d_small):
    """Full-batch GD (B = the 800 training examples), MLP 40-8-8-10, 2 learning rates x 2
    seeds, the default probe (on the step's minibatch, here the training set) at steps 0, 2,
    .., STEPS."""
    probe = lambda_max_probe(every=EVERY)
    config = SweepConfig(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                         model_options={"width": WIDTH, "depth": 2}, batch_sizes=(NUM_TRAIN,),
                         budget=STEPS + 1, budget_unit="steps", eval_every=STEPS + 1,
                         grid=Grid(learning_rate=(0.05, 0.5), seed=(3, 4)))
    m = run_sweep(config, data=mnist1d_small, probes=(probe,), progress=False).metrics
    return probe, m.isel(batch_size=0)


def _alone(probe, data, learning_rate: float, seed: int):
    """One run by hand, no sweep and no vmap: full-batch GD θ ← θ − ε∇L(θ), the probe called
    as the engine calls it (its keys: ``jaxsgd.engine.training``). Returns its outputs at steps 0,
    EVERY, .., STEPS and θ_STEPS."""
    _, _, k_probe = run_keys(seed)
    params = jax.jit(MLP.init)(run_keys(seed)[0])
    batch = (jnp.asarray(data.x_train), jnp.asarray(data.y_train))
    state = probe.init(params, jax.random.fold_in(k_probe, 0))
    measure = jax.jit(lambda p, k, t, s: probe.measure(_mlp_loss, p, None, batch, k, t, s))
    descend = jax.jit(lambda p: jax.tree.map(lambda a, g: a - learning_rate * g, p,
                                             jax.grad(_mlp_loss)(p, batch)))
    outputs = []
    for t in range(STEPS + 1):
        if t % EVERY == 0:
            state, out = measure(params, jax.random.fold_in(jax.random.fold_in(k_probe, 0), t),
                                 t, state)
            outputs.append(out)
        if t < STEPS:
            params = descend(params)
    return {k: np.array([o[k] for o in outputs]) for k in outputs[0]}, params


def _dense_lambda_max(params, x, y) -> float:
    """λ_max of the float64 dense Hessian of the MLP's mean cross-entropy on (x, y)."""
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        batch = (jnp.asarray(x, jnp.float64), jnp.asarray(y))
        h = np.asarray(jax.jit(jax.hessian(lambda f: _mlp_loss(unravel(f), batch)))(flat))
    return float(np.linalg.eigvalsh((h + h.T) / 2)[-1])


def test_mlp_probe_is_each_runs_own_and_agrees_with_a_dense_hessian(mnist1d_small, mlp_sweep):
    """Run (ε = 0.5, seed 4) trained alone by hand: the sweep's outputs for it equal the lone
    run's at every point — including the first, unconverged ones, which depend on the run's
    own random start vector (vmapped runs are independent). At θ_STEPS (13th measurement,
    default 2 iterations, warm) the estimate is within 1% of the dense float64 eigh; the
    learning rates' curves part (progressive sharpening at 0.5)."""
    probe, m = mlp_sweep
    assert list(m.lambda_max_step.values) == list(range(0, STEPS + 1, EVERY))
    run = m.sel(learning_rate=0.5, seed=4)
    outputs, final = _alone(probe, mnist1d_small, 0.5, 4)
    np.testing.assert_allclose(run.lambda_max_value.values, outputs["value"], rtol=1e-3)
    np.testing.assert_allclose(run.lambda_max_residual.values, outputs["residual"], rtol=1e-2)
    other_seed = m.sel(learning_rate=0.5, seed=3).lambda_max_value.values
    assert abs(run.lambda_max_value.values[1] / other_seed[1] - 1) > 1e-2
    exact = _dense_lambda_max(final, mnist1d_small.x_train, mnist1d_small.y_train)
    last = run.isel(lambda_max_step=-1)
    assert float(last.lambda_max_value) == pytest.approx(exact, rel=1e-2)
    assert float(last.lambda_max_residual) < 0.05
    slow = m.sel(learning_rate=0.05, seed=4).lambda_max_value.values
    assert slow[0] == pytest.approx(run.lambda_max_value.values[0], rel=1e-4)  # same θ_0, v_0
    assert run.lambda_max_value.values[-1] > 3 * slow[-1]


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_a_clear_value_error(regression):
    x, y = regression.x_train, regression.y_train
    for bad, match in ((dict(every=0), "every: 0"), (dict(every=2.5), "every: 2.5"),
                       (dict(num_iterations=0), "num_iterations: 0"),
                       (dict(num_iterations=True), "num_iterations: True"),
                       (dict(reference_iterations=-1), "reference_iterations: -1"),
                       (dict(data=(x[:5], y[:4])), r"data: .*numbers of examples \[4, 5\]"),
                       (dict(data=(x[:0], y[:0])), "data: holds 0 examples"),
                       (dict(data=(x[0, 0], y[0])), "data: a leaf of shape"),
                       (dict(data=()), "data: tuple holds no arrays")):
        with pytest.raises(ValueError, match=match):
            lambda_max_probe(**bad)
    config = _regression_config(16, 4)
    for probe, match in (
            (lambda_max_probe(num_iterations=DIM + 2), "num_iterations: 26 exceeds the number "
                                                       r"of parameters \(25\)"),
            (lambda_max_probe(reference_iterations=99), "reference_iterations: 99 exceeds"),
            (lambda_max_probe(data=(x[:8, :3], y[:8])), r"data: examples of shape \(3,\)")):
        with pytest.raises(ValueError, match=match):
            run_sweep(config, data=regression, probes=(probe,), progress=False)


def test_fixed_data_enters_the_provenance(regression):
    x, y = regression.x_train, regression.y_train

    def record(probe):
        return {"run": {"probes": describe_probes((probe,))}}

    same = record(lambda_max_probe(data=(x[:8], y[:8])))
    assert differences(same, record(lambda_max_probe(data=(x[:8].copy(), y[:8])))) == []
    for other in (lambda_max_probe(data=(x[1:9], y[1:9])), lambda_max_probe(),
                  lambda_max_probe(data=(x[:8], y[:8]), num_iterations=3)):
        assert differences(same, record(other))
