"""Critical batch size from steps-to-target: synthetic recovery, infeasible points, the measured
1.2× crossing, bad input, and a real tiny sweep against the summary table."""

import math

import numpy as np
import pytest
import xarray as xr

from jaxsgd import Grid, SweepConfig, run_sweep
from jaxsgd.analysis.critical import (critical_batch_size, examples_crossing,
                                      plot_critical_batch_size, refine_learning_rate)
from jaxsgd.targets import sweep_steps_to_target
from jaxsgd.analysis.summary import best_runs

S_MIN, B_CRIT, EPS_MAX, B_NOISE = 50.0, 200.0, 1.0, 100.0
BATCH_SIZES = 2.0 ** np.arange(2, 13)  # 4 … 4096: three decades
LEARNING_RATES = 2.0 ** np.arange(-7, 3)  # 1/128 … 4, brackets ε_opt(B) at every B


def synthetic_steps(rng, *, batch_sizes=BATCH_SIZES, noise=0.05, seeds=3, curvature=2.0):
    """Steps [batch_size, learning_rate, seed] with S(B) = S_min(1 + B_crit/B) at the best grid
    learning rate, log S a parabola in log ε with vertex ε_opt(B) = ε_max/(1 + B_noise/B), and
    independent log-normal noise of relative size ``noise`` on every run."""
    s = S_MIN * (1 + B_CRIT / batch_sizes)
    eps_opt = EPS_MAX / (1 + B_NOISE / batch_sizes)
    d2 = (np.log(LEARNING_RATES)[None] - np.log(eps_opt)[:, None]) ** 2
    shape = np.exp(curvature * (d2 - d2.min(axis=1, keepdims=True)))  # 1 at the best grid point
    steps = s[:, None, None] * shape[:, :, None]
    steps = steps * np.exp(noise * rng.standard_normal((len(batch_sizes), len(LEARNING_RATES),
                                                        seeds)))
    return xr.DataArray(steps, dims=("batch_size", "learning_rate", "seed"),
                        coords={"batch_size": batch_sizes.astype(int),
                                "learning_rate": LEARNING_RATES, "seed": np.arange(seeds)})


def test_recovers_s_min_and_b_crit_from_noisy_synthetic_steps():
    """Acceptance: 5% log-normal noise, 3 seeds, B over three decades -> within 5%.

    (Over 200 noise draws of this design, 95% give B_crit within 4.6%, S_min within 3.2%.)
    """
    steps = synthetic_steps(np.random.default_rng(0))
    cbs = critical_batch_size(steps, num_bootstrap=100)
    assert cbs.s_min == pytest.approx(S_MIN, rel=0.05)
    assert cbs.b_crit == pytest.approx(B_CRIT, rel=0.05)
    assert cbs.e_min == pytest.approx(S_MIN * B_CRIT, rel=0.05)
    for value, (low, high) in [(cbs.s_min, cbs.s_min_interval), (cbs.b_crit, cbs.b_crit_interval),
                               (cbs.e_min, cbs.e_min_interval)]:
        assert low <= value <= high and high / low < 1.2
    assert 0.01 < cbs.fit_rms < 0.05  # the seed mean of 5% noise: about 3%
    assert cbs.table["feasible"].all()
    assert np.all(cbs.table["examples"] == cbs.table["steps"] * cbs.table["batch_size"])


@pytest.mark.parametrize("interval, replications, draws", [("pooled", 60, 30),
                                                           ("jackknife", 100, 0)])
def test_intervals_cover_a_known_b_crit_at_their_nominal_rate_with_three_seeds(
        interval, replications, draws):
    """Simulated sweeps (S(B) = S_min(1 + B_crit/B), 10% log-normal scatter per run, 3 seeds):
    the 90% intervals cover the true B_crit. Measured over 100 replications with 200 draws:
    pooled 89% (median high/low 1.27), jackknife 87% (1.46); the bootstrap's percentiles 64%
    (1.15), too narrow for three seeds."""
    rng = np.random.default_rng(0)
    b = 2.0 ** np.arange(3, 11)
    covered, ratios = 0, []
    for i in range(replications):
        steps = (S_MIN * (1 + B_CRIT / b))[:, None, None] * np.exp(
            0.1 * rng.standard_normal((len(b), 1, 3)))
        cbs = critical_batch_size(xr.DataArray(
            steps, dims=("batch_size", "learning_rate", "seed"),
            coords={"batch_size": b.astype(int), "learning_rate": [0.1], "seed": [0, 1, 2]}),
            interval=interval, num_bootstrap=draws, seed=i)
        low, high = cbs.b_crit_interval
        covered += low <= B_CRIT <= high
        ratios.append(high / low)
    assert 0.8 <= covered / replications <= 0.98
    assert 1.1 < np.median(ratios) < 2.0


def test_optimal_learning_rate_fit_recovers_b_noise():
    cbs = critical_batch_size(synthetic_steps(np.random.default_rng(1)), num_bootstrap=50)
    assert cbs.eps_max == pytest.approx(EPS_MAX, rel=0.03)
    assert cbs.b_noise == pytest.approx(B_NOISE, rel=0.05)
    low, high = cbs.b_noise_interval
    assert low <= cbs.b_noise <= high
    # refined rates sit between grid points, near the truth; grid picks are off by up to √2
    truth = EPS_MAX / (1 + B_NOISE / BATCH_SIZES)
    refined = cbs.table["learning_rate_opt"].values
    assert np.max(np.abs(np.log(refined / truth))) < 0.1
    assert not cbs.table["learning_rate_at_edge"].any()


def test_batch_size_with_only_diverged_runs_is_infeasible():
    clean = synthetic_steps(np.random.default_rng(0))
    extra = xr.full_like(clean.isel(batch_size=[-1]), np.inf).assign_coords(batch_size=[8192])
    # at B = 16 one seed of the best learning rate diverged: that point is infeasible too
    spoiled = clean.copy()
    best = float(critical_batch_size(clean, num_bootstrap=0).table["learning_rate"]
                 .sel(batch_size=16))
    spoiled.loc[dict(batch_size=16, learning_rate=best, seed=1)] = np.inf
    steps = xr.concat([spoiled, extra], dim="batch_size")
    cbs = critical_batch_size(steps, num_bootstrap=0)
    table = cbs.table.sel(batch_size=8192)
    assert not table["feasible"] and math.isinf(table["steps"]) and math.isinf(table["examples"])
    assert math.isnan(table["learning_rate"]) and math.isnan(table["learning_rate_opt"])
    assert int(cbs.table["feasible"].sum()) == len(BATCH_SIZES)
    assert float(cbs.table["learning_rate"].sel(batch_size=16)) != best
    # the infeasible batch size is left out of the fit
    assert cbs.b_crit == critical_batch_size(spoiled, num_bootstrap=0).b_crit


def test_best_point_is_chosen_over_every_search_dim():
    clean = synthetic_steps(np.random.default_rng(2))
    # momentum 0.9 halves the steps at B <= 64 only
    faster = clean * xr.where(clean["batch_size"] <= 64, 0.5, 2.0)
    steps = xr.concat([clean, faster], dim=xr.DataArray([0.0, 0.9], dims="momentum"))
    cbs = critical_batch_size(steps.transpose("seed", "momentum", ...), num_bootstrap=0)
    momentum = cbs.table["momentum"]
    assert (momentum.sel(batch_size=slice(None, 64)) == 0.9).all()
    assert (momentum.sel(batch_size=slice(128, None)) == 0.0).all()
    np.testing.assert_allclose(cbs.table["steps"].sel(batch_size=64),
                               faster.sel(batch_size=64).mean("seed").min())


def test_measured_crossing_is_interpolated_between_measured_points():
    # Exact S = S_min(1 + B_crit/B) with S_min = B_crit = 100: E/E_min = 1 + B/100 measured at
    # B = 10 (1.1) and 30 (1.3). Linear in (log B, log E): t = ln(1.2/1.1)/ln(1.3/1.1) = 0.52086,
    # B = 10 · 3^t = 17.722, not the fit's 20.
    b = np.array([10, 30, 100, 300, 1000])
    steps = xr.DataArray((100 * (1 + 100 / b))[:, None, None], dims=("batch_size", "learning_rate",
                         "seed"), coords={"batch_size": b, "learning_rate": [0.1], "seed": [0]})
    cbs = critical_batch_size(steps)
    assert cbs.b_crit == pytest.approx(100, rel=1e-6) and cbs.e_min == pytest.approx(1e4, rel=1e-6)
    assert cbs.b_crit_measured == pytest.approx(17.722, abs=1e-3)
    # one seed: no bootstrap; one learning rate: at the edge, no ε_opt fit
    assert all(math.isnan(v) for v in (*cbs.b_crit_interval, cbs.eps_max, cbs.b_noise))
    assert math.isnan(examples_crossing(b, 1e4 * (1 + b / 100), 1.05e4))  # first already above
    assert math.isnan(examples_crossing(b, np.full(5, 1e4), 1.2e4))  # never crosses


def test_refined_learning_rate_is_the_parabola_vertex():
    lrs = np.array([0.1, 0.2, 0.4, 0.8])
    steps = np.exp((np.log(lrs) - np.log(0.3)) ** 2)
    assert refine_learning_rate(lrs, steps, 1) == pytest.approx(0.3)
    assert refine_learning_rate(lrs, steps, 0) == 0.1  # edge of the grid
    assert refine_learning_rate(lrs, np.array([5, 2, np.inf, 9.0]), 1) == 0.2  # diverged neighbour


@pytest.mark.parametrize("steps, kwargs, match", [
    (xr.DataArray(np.ones((3, 2)), dims=("batch_size", "seed")), {}, r"missing dim.*learning_rate"),
    (xr.DataArray(-np.ones((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}), {}, "negative"),
    (xr.DataArray(np.ones((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [0, 2, 3], "learning_rate": [0.1]}), {}, "batch_size 0"),
    (xr.DataArray(np.ones((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}),
     {"target": 0.5}, "DataArray already holds"),
    (xr.DataArray(np.ones((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}),
     {"confidence": 1.5}, "confidence: 1.5"),
    (xr.DataArray(np.ones((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}),
     {"num_bootstrap": -1}, "num_bootstrap: -1"),
    (xr.DataArray(np.zeros((3, 1, 1)), dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}),
     {}, r"step 0, before training \(batch_size=1, learning_rate=0.1, seed=0\)"),
    (xr.DataArray([[[1.0]], [[2.0]], [[np.inf]]], dims=("batch_size", "learning_rate", "seed"),
                  coords={"batch_size": [1, 2, 3], "learning_rate": [0.1]}),
     {}, r"only 2 batch size\(s\) reach the target \(\[1, 2\]\).*Infeasible.*\[3\]"),
])
def test_bad_input_is_named(steps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        critical_batch_size(steps, **kwargs)


# ----------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def sweep():
    """digits, linear model, 64 steps at B = 8, 32, 128; every batch size reaches 10% error."""
    config = SweepConfig(data="digits", model="linear", batch_sizes=(8, 32, 128), budget=64,
                         budget_unit="steps", eval_every=2, target_metric="test_error",
                         target_value=0.1, grid=Grid(learning_rate=(0.1, 0.3, 1.0), seed=(0, 1)))
    return run_sweep(config, progress=False)


def test_real_sweep_matches_summary_and_recomputed_targets(sweep):
    cbs = critical_batch_size(sweep, num_bootstrap=20)
    summary_steps = best_runs(sweep)["steps_to_target"].mean("seed")
    np.testing.assert_array_equal(cbs.table["steps"], summary_steps)
    assert cbs.table["feasible"].all() and 0 < cbs.s_min < cbs.table["steps"].min()
    assert math.isfinite(cbs.b_crit) and cbs.b_crit > 0
    # the sweep's own target recomputed from the curves equals the stored steps to target
    xr.testing.assert_equal(sweep_steps_to_target(sweep, 0.1).drop_attrs(),
                            sweep.metrics["steps_to_target"])
    # a looser target is reached no later, and metric + value pick any target
    looser = sweep_steps_to_target(sweep, 0.2)
    assert (looser <= sweep.metrics["steps_to_target"]).all()
    by_accuracy = sweep_steps_to_target(sweep, 0.8, metric="test_accuracy")
    xr.testing.assert_equal(by_accuracy.drop_attrs(), looser.drop_attrs())
    assert critical_batch_size(sweep, 0.2, num_bootstrap=0).s_min <= cbs.s_min * 1.01
    fig = plot_critical_batch_size(cbs)
    assert len(fig.axes) == 2


def test_real_sweep_bad_target_is_named(sweep):
    with pytest.raises(ValueError, match="target metric 'f1'"):
        critical_batch_size(sweep, 0.5, metric="f1")
    with pytest.raises(ValueError, match="target: inf"):
        critical_batch_size(sweep, math.inf)
    with pytest.raises(ValueError, match="without a target value"):
        critical_batch_size(sweep, metric="test_loss")


def _tied_result():
    """A hand-built sweep: at every batch size learning rates 0.1 and 0.2 tie on steps to target,
    0.2 has the better final test accuracy; 0.4 was never run at B = 16 (NaN everywhere)."""
    from jaxsgd.engine.results import SweepResult

    batch_sizes, lrs, seeds = [16, 32, 64, 128], [0.1, 0.2, 0.4], [0, 1]
    config = SweepConfig(batch_sizes=tuple(batch_sizes), budget=4096, eval_every=1024,
                         target_metric="test_error", target_value=0.5,
                         grid=Grid(learning_rate=tuple(lrs), seed=tuple(seeds)))
    steps = np.empty((4, 3, 2))
    accuracy = np.empty((4, 3, 2, 5))
    for i, b in enumerate(batch_sizes):
        s = 100.0 * (1 + 64 / b)
        steps[i] = [[s, s], [s - 10, s + 10], [s * 3, s * 3]]  # 0.1 and 0.2: the same mean
        accuracy[i] = np.linspace(0.1, 1, 5)[None, None] * np.array([0.6, 0.7, 0.5])[:, None,
                                                                                       None]
    steps[0, 2], accuracy[0, 2] = np.nan, np.nan  # B = 16, lr 0.4: not run
    dims = ["batch_size", "learning_rate", "seed"]
    metrics = xr.Dataset(
        {"steps_to_target": (dims, steps),
         "examples_to_target": (dims, steps * np.array(batch_sizes)[:, None, None]),
         "test_accuracy": ([*dims, "examples"], accuracy),
         "diverged": (dims, np.zeros(steps.shape, bool))},
        coords={"batch_size": batch_sizes, "learning_rate": lrs, "seed": seeds,
                "examples": np.arange(5) * 1024})
    return SweepResult(config=config, metrics=metrics)


def test_summary_and_critical_batch_size_pick_the_same_point_on_a_tie():
    from jaxsgd.analysis.summary import best_hyperparameters, summarize

    result = _tied_result()
    best = best_hyperparameters(result)["learning_rate"].values
    cbs = critical_batch_size(result, num_bootstrap=20)
    np.testing.assert_array_equal(best, [0.2] * 4)  # the tie goes to the better final accuracy
    np.testing.assert_array_equal(cbs.table["learning_rate"].values, best)
    assert cbs.table["feasible"].all()
    np.testing.assert_allclose(cbs.table["steps"], 100.0 * (1 + 64 / cbs.table["batch_size"]))
    assert cbs.b_crit == pytest.approx(64.0) and cbs.s_min == pytest.approx(100.0)
    # on the steps alone (no final metric) the tie goes to grid order: the first point
    steps_only = critical_batch_size(result.metrics["steps_to_target"], num_bootstrap=0)
    np.testing.assert_array_equal(steps_only.table["learning_rate"].values, [0.1] * 4)
    assert "0.2" in summarize(result).splitlines()[3]


def test_a_point_that_was_not_run_is_never_chosen_and_seeds_not_run_are_left_out():
    from jaxsgd.analysis.best import choose, combine_seeds

    steps = np.array([[[np.nan, np.nan], [50.0, 70.0], [40.0, np.nan]]])  # [B, P, S]
    np.testing.assert_array_equal(combine_seeds(steps), [[np.nan, 60.0, 40.0]])
    assert choose(steps).index.tolist() == [2]  # the point with one seed run, at 40
    assert choose(steps[:, :2]).index.tolist() == [1]
    assert choose(np.full((1, 2, 2), np.nan)).index.tolist() == [-1]  # nothing run
    # median: one infeasible seed of three does not make a point infeasible; mean does
    three = np.array([[[10.0, 12.0, np.inf], [20.0, 20.0, 20.0]]])
    assert choose(three, seeds="mean").index.tolist() == [1]
    assert choose(three, seeds="median").index.tolist() == [0]
    assert choose(three, seeds="median").score.tolist() == [12.0]
    with pytest.raises(ValueError, match="seeds: 'max' is not one of mean, median"):
        choose(three, seeds="max")


def test_ols_fit_with_median_over_seeds_reproduces_an_independent_ols():
    rng = np.random.default_rng(3)
    b = np.array([8.0, 16, 32, 64, 128, 256, 512])
    truth = 40.0 + 6000.0 / b
    steps = truth[:, None, None] * np.exp(0.1 * rng.standard_normal((len(b), 2, 3)))
    steps[:, 1] *= 3.0  # the second learning rate is always worse
    steps[2, 0, 1] = np.inf  # one infeasible seed: the median keeps the point
    da = xr.DataArray(steps, dims=("batch_size", "learning_rate", "seed"),
                      coords={"batch_size": b.astype(int), "learning_rate": [0.1, 0.3],
                              "seed": [0, 1, 2]})
    cbs = critical_batch_size(da, fit="ols", seeds="median", num_bootstrap=0)
    median = np.median(steps[:, 0], axis=1)
    slope, intercept = np.polyfit(1.0 / b, median, 1)  # independent OLS on (1/B, S)
    assert cbs.s_min == pytest.approx(intercept, rel=1e-10)
    assert cbs.e_min == pytest.approx(slope, rel=1e-10)
    assert cbs.b_crit == pytest.approx(slope / intercept, rel=1e-10)
    np.testing.assert_array_equal(cbs.table["steps"].values, median)
    # the default (mean over seeds) drops the point with an infeasible seed: B = 32 falls back
    # to the worse learning rate
    default = critical_batch_size(da, num_bootstrap=0)
    assert float(default.table["learning_rate"].sel(batch_size=32)) == 0.3
    assert float(cbs.table["learning_rate"].sel(batch_size=32)) == 0.1
    with pytest.raises(ValueError, match="fit: 'lsq' is not one of log, ols"):
        critical_batch_size(da, fit="lsq")
