"""minima_summary against ground truth: a dense Hessian's top eigenvalue and trace, each run
measured alone, losses recomputed from the final params, and runs that cannot have moved.

One tiny sweep (digits, MLP 64-8-10: 610 parameters) with three learning rates: 1e-9 (the
params stay at their initialisation, so distance_from_init must be ~0 exactly when θ_0 is
recomputed from the right seed), 0.3 (trains), and 1e4 (diverges: its measures must be NaN).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxsgd
from jaxsgd.analysis.minima import MinimaOptions, measure_minimum, minima_summary
from jaxsgd.engine.sweep import prepare
from jaxsgd.engine.training import initial_params

OPTIONS = MinimaOptions(num_examples=128, lanczos_iterations=40, trace_probes=8,
                        epsilon_steps=3, adaptive_steps=3)
LRS = (1e-9, 0.3, 1e4)


@pytest.fixture(scope="module")
def sweep():
    config = jaxsgd.SweepConfig(
        data="digits", model="mlp", model_options={"width": 8, "depth": 1},
        optimizer="sgd", batch_sizes=(16, 64), budget=2048, eval_every=1024,
        grid=jaxsgd.Grid(learning_rate=LRS, seed=(0, 1)))
    result = jaxsgd.run_sweep(config, progress=False)
    summary = minima_summary(result, key=3, options=OPTIONS, runs_per_call=4)  # 6 runs: 4 + 2
    return config, result, summary


def _run_params(result, b, lr, seed):
    run = int(result.metrics["run"].sel(batch_size=b, learning_rate=lr, seed=seed))
    return jax.tree.map(lambda a: a[run], result.params[b])


def test_dims_follow_the_sweep_and_diverged_runs_are_nan(sweep):
    _, result, summary = sweep
    assert dict(summary.sizes) == {"batch_size": 2, "learning_rate": 3, "seed": 2}
    np.testing.assert_array_equal(summary.learning_rate, result.metrics.learning_rate)
    diverged = result.metrics["diverged"]
    assert bool(diverged.sel(learning_rate=1e4).all()) and not bool(
        diverged.sel(learning_rate=[1e-9, 0.3]).any())
    for name in ("lambda_max", "hessian_trace", "epsilon_sharpness", "adaptive_sharpness",
                 "distance_from_init"):
        assert summary[name].sel(learning_rate=1e4).isnull().all(), name
        assert np.isfinite(summary[name].sel(learning_rate=[1e-9, 0.3])).all(), name


def test_distance_from_init_is_zero_for_runs_that_did_not_move(sweep):
    _, _, summary = sweep
    still = summary["relative_distance"].sel(learning_rate=1e-9)
    moved = summary["relative_distance"].sel(learning_rate=0.3)
    assert float(still.max()) < 1e-6  # a wrong seed's θ_0 would be ~√2 away
    assert float(moved.min()) > 1e-2


def test_losses_and_gap_are_the_final_params_own(sweep):
    config, result, summary = sweep
    _, data, model, task, _ = prepare(config)
    loss_fn = jax.jit(jaxsgd.make_loss_fn(model, task))
    for b in (16, 64):
        for seed in (0, 1):
            p = _run_params(result, b, 0.3, seed)
            train = float(loss_fn(p, (data.x_train, data.y_train)))
            test = float(loss_fn(p, (data.x_test, data.y_test)))
            row = summary.sel(batch_size=b, learning_rate=0.3, seed=seed)
            assert float(row.train_loss) == pytest.approx(train, rel=1e-4)
            assert float(row.generalization_gap) == pytest.approx(test - train, rel=1e-3,
                                                                  abs=1e-5)


def test_lambda_max_and_trace_match_the_dense_hessian(sweep):
    config, result, summary = sweep
    _, data, model, task, _ = prepare(config)
    loss_fn = jaxsgd.make_loss_fn(model, task)
    batch = (data.x_train[:128], data.y_train[:128])
    p = _run_params(result, 16, 0.3, 1)
    flat, unravel = ravel_pytree(p)
    dense = np.asarray(jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), batch)))(flat),
                       np.float64)
    row = summary.sel(batch_size=16, learning_rate=0.3, seed=1)
    assert float(row.lambda_max) == pytest.approx(np.linalg.eigvalsh(dense)[-1], rel=1e-3)
    assert abs(float(row.hessian_trace) - np.trace(dense)) <= 3 * float(row.hessian_trace_stderr)


def test_measured_in_one_call_equals_each_run_alone(sweep):
    config, result, summary = sweep
    _, data, model, task, _ = prepare(config)
    loss_fn = jaxsgd.make_loss_fn(model, task)
    batch = (jnp.asarray(data.x_train[:128]), jnp.asarray(data.y_train[:128]))
    alone = jax.jit(lambda p, p0: measure_minimum(loss_fn, p, batch, p0, key=jax.random.key(3),
                                                  options=OPTIONS))
    for b, lr, seed in ((64, 0.3, 0), (16, 1e-9, 1)):
        got = alone(_run_params(result, b, lr, seed), initial_params(model.init, seed))
        row = summary.sel(batch_size=b, learning_rate=lr, seed=seed)
        for name, value in got.items():
            # Residuals once converged, and the unmoved run's distance, are float32 rounding
            # noise (~1e-7 .. 1e-6): compared absolutely.
            noise = name.endswith("residual") or name.endswith("distance_from_init")
            tol = dict(abs=1e-5) if noise else dict(rel=1e-4, abs=1e-7)
            assert float(row[name]) == pytest.approx(float(value), **tol), name


def test_validation_metrics_are_each_runs_own_on_the_held_out_examples(sweep):
    config, result, _ = sweep
    _, data, model, task, _ = prepare(config)
    x_val, y_val = data.x_test[:100], data.y_test[:100]  # any examples shaped like training's
    summary = minima_summary(result, options=MinimaOptions(measures=()), runs_per_call=4,
                             validation=(x_val, y_val))
    for b, lr, seed in ((16, 0.3, 0), (64, 0.3, 1), (64, 1e-9, 0)):
        expected = task.metrics(model.apply(_run_params(result, b, lr, seed), x_val), y_val)
        row = summary.sel(batch_size=b, learning_rate=lr, seed=seed)
        assert float(row.validation_loss) == pytest.approx(float(expected["loss"]), rel=1e-5)
        assert float(row.validation_accuracy) == pytest.approx(float(expected["accuracy"]))
    assert summary.validation_accuracy.sel(learning_rate=1e4).isnull().all()  # diverged
    with pytest.raises(ValueError, match=r"validation: inputs \(100, 3\)"):
        minima_summary(result, validation=(x_val[:, :3], y_val))


@pytest.mark.parametrize("kwargs, message", [
    (dict(runs_per_call=0), "runs_per_call"),
    (dict(batch_sizes=(32,)), "batch_sizes: [32]"),
])
def test_bad_arguments_are_refused_before_measuring(sweep, kwargs, message):
    _, result, _ = sweep
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        minima_summary(result, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(measures=("lambda_max", "sharpest")), "sharpest"),
    (dict(trace_probes=0), "trace_probes"),
    (dict(epsilon=-1.0), "epsilon"),
])
def test_bad_options_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MinimaOptions(**kwargs)
