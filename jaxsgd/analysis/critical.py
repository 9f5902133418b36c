"""Critical batch size from steps-to-target (McCandlish et al. 2018; Shallue et al. 2019).

Steps and examples to reach a target trade off as (SCIENCE.md)

    S(B) = S_min (1 + B_crit / B),    E(B) = B·S(B) = E_min (1 + B / B_crit),

so S is linear in 1/B: S = a + b/B with a = S_min (optimizer steps), b = E_min (examples) and
B_crit = E_min / S_min (examples). The optimal learning rate follows the same law in 1/ε:

    ε_opt(B) = ε_max / (1 + B_noise / B),   i.e.   1/ε_opt = 1/ε_max + (B_noise/ε_max) / B,

which gives a second, independent estimate of the noise scale B_noise.

``critical_batch_size(results, target)`` takes a sweep (``SweepResult``) or a steps-to-target
``xarray.DataArray`` [batch_size, learning_rate, (momentum, …,) seed] (inf: never reached or
diverged; NaN: not run) and

1. picks the best grid point per batch size over the learning rate and every other non-seed
   dim by the one rule of ``jaxsgd.analysis.best`` (as ``summarize`` does): the fewest steps,
   seeds combined by their mean (one infeasible seed makes the point infeasible, Shallue et
   al.) or median (``seeds="median"``); ties by the final test metric (for a ``SweepResult``),
   then grid order. A batch size with no feasible point is marked ``feasible=False`` and left
   out of every fit;
2. fits S = a + b/B to the best steps. By default (``fit="log"``) on *relative* residuals,
   since steps span decades: minimise Σ_B (log S_B − log(a + b/B))² over a, b > 0
   (``scipy.optimize.least_squares`` on log a, log b, started from the linear fit weighted by
   1/S); with ``fit="ols"`` by ordinary least squares on (1/B, S), as McCandlish et al. 2018.
   Needs 3 feasible batch sizes;
3. reads the operational critical batch size from the *measured* points, not from the fit:
   the first batch size where E_B = B·S_B exceeds ``threshold`` × E_min (E_min from the fit,
   the B → 0 limit of E), interpolated linearly in (log B, log E) between the two bracketing
   feasible batch sizes; NaN if no measured point exceeds it, or the smallest already does.
   Under the model this is (threshold − 1)·B_crit (0.2 B_crit): the 20%-over-perfect-scaling
   batch size of Shallue et al., so b_crit_measured / 0.2 ≈ b_crit checks the curve's shape;
4. refines the best learning rate between grid points: through the best grid point and its two
   neighbours (at the best values of the other dims), a parabola in (log ε, log S) whose vertex,
   clipped to the neighbours, is ε_opt(B). At the edge of the grid, or next to an infeasible
   neighbour, or without upward curvature, ε_opt is the grid value. Batch sizes whose best
   learning rate is at the edge of the grid (the optimum may lie outside it) are left out of the
   ε_opt fit, which fits 1/ε_opt = a' + b'/B like step 2 (NaN if fewer than 3 remain);
5. intervals at ``confidence`` that stay honest with few seeds (a seed fixes the
   initialisation and minibatch order of every batch size and grid point):

   * ``interval="pooled"`` (default): a parametric bootstrap. The spread of log steps between
     seeds at each feasible batch size's best point, pooled over batch sizes, gives σ with
     ν = Σ_B (n_B − 1) degrees of freedom (14–16 for 8 batch sizes and 3 seeds, where a
     statistic of the seeds alone has 2); ``num_bootstrap`` draws multiply every run's steps
     by exp(σ·z) and move each within its evaluation interval (the target was crossed
     somewhere in (S − gap, S], uniformly), redo steps 1, 2, 4, and the interval is
     exp(log θ̂ ± t_ν·sd(log θ*));
   * ``interval="jackknife"``: the n leave-one-seed-out estimates and Student's t with n − 1
     degrees of freedom, exp(log θ̂ ± t_{n−1}·SE_jack): right on average, but its width rests
     on n − 1 degrees of freedom and swings from target to target;
   * ``interval="bootstrap"``: ``num_bootstrap`` resamples of the seeds with replacement and
     percentile intervals. n seeds allow only C(2n − 1, n) distinct resamples (10 for 3) and
     the percentiles ignore that the seeds are few: too narrow below ~10 seeds.

   Measured on simulated steps with a known B_crit (S(B) = S_min(1 + B_crit/B), 10% log-normal
   scatter per run, 8 batch sizes, 100 replications, 200 draws; ``tests/test_critical.py``
   checks the first two): nominal 90% intervals covered the truth in 89% of replications with
   3 seeds pooled (median high/low 1.27), 87% with the jackknife (1.46; 86% and 93% with 2
   and 5 seeds) and 64% with the bootstrap (1.15; 48% and 84% with 2 and 5 seeds). On the
   critical-batch experiment (README), re-run on 2 CPU devices instead of 8 — rounding that
   training amplifies into a fresh draw of each large-batch run's noise — the pooled intervals
   of each run held the other's B_crit at all four targets; the jackknife's and the bootstrap's
   on 8 devices missed one (at a training loss of 0.7, 119.8 [117.6, 122.0] and
   [118.9, 120.5] against 124.6). With one seed there is no spread to measure and the
   intervals are NaN.

Steps to target are quantised: a run scores the first *evaluation* step at which it reached the
target, an overestimate by up to one evaluation interval. Evaluate often compared with the fewest
steps to target (the largest batch sizes), or S_min and B_crit absorb the quantisation.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy.optimize import least_squares
from scipy.stats import t as student_t

from jaxsgd._util import check_int
from jaxsgd.analysis.best import check_seed_rule, choose, final_metric, final_metric_name
from jaxsgd.engine.results import SweepResult
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style
from jaxsgd.targets import sweep_steps_to_target

MIN_POINTS = 3  # feasible batch sizes a two-parameter fit needs (one spare degree of freedom)
_NAN2 = (math.nan, math.nan)


class CriticalBatchSize(NamedTuple):
    """Result of ``critical_batch_size``; intervals are (low, high) over seeds at ``confidence``
    (pooled parametric bootstrap by default, jackknife or seed bootstrap: module docstring,
    step 5).

    s_min: S_min, optimizer steps (the B → ∞ plateau). e_min: E_min, examples (the B → 0 limit).
    b_crit: E_min / S_min, examples per batch. b_crit_measured: the batch size where measured
        examples-to-target first exceed ``threshold`` × E_min (interpolated; NaN if not crossed).
    eps_max, b_noise: fit of ε_opt(B) = ε_max / (1 + B_noise/B) (NaN if too few points).
    fit_rms: root-mean-square of the log residuals of the S(B) fit (0.05 ≈ 5% scatter).
    table: per batch size [batch_size]: feasible, steps (seed mean at the best point; inf if
        infeasible), examples (= B × steps), the best value of each search dim (learning_rate,
        momentum, …; NaN if infeasible), learning_rate_opt (refined), learning_rate_at_edge,
        steps_fit (the fitted curve).
    """

    s_min: float
    e_min: float
    b_crit: float
    s_min_interval: tuple[float, float]
    e_min_interval: tuple[float, float]
    b_crit_interval: tuple[float, float]
    b_crit_measured: float
    eps_max: float
    b_noise: float
    eps_max_interval: tuple[float, float]
    b_noise_interval: tuple[float, float]
    fit_rms: float
    table: xr.Dataset
    threshold: float
    confidence: float


def _checked_steps(steps: xr.DataArray) -> xr.DataArray:
    """Validated steps as float64 [batch_size, learning_rate, *others, seed], B ascending."""
    missing = [d for d in ("batch_size", "learning_rate", "seed") if d not in steps.dims]
    if missing:
        raise ValueError(f"steps: missing dim(s) {missing}; got dims {list(steps.dims)}")
    for d in ("batch_size", "learning_rate"):
        if d not in steps.coords:
            raise ValueError(f"steps: dim {d!r} has no coordinate values")
        values = np.asarray(steps[d].values, np.float64)
        bad = values[~(np.isfinite(values) & (values > 0))]
        if bad.size:
            raise ValueError(f"steps: {d} {float(bad[0]):g} is not a positive number")
    others = [d for d in steps.dims if d not in ("batch_size", "learning_rate", "seed")]
    steps = steps.transpose("batch_size", "learning_rate", *others, "seed").astype(np.float64)
    negative = steps.values[steps.values < 0]
    if negative.size:
        raise ValueError(f"steps: {float(negative[0]):g} steps to target is negative")
    if (steps.values == 0).any():
        first = np.argwhere(steps.values == 0)[0]
        where = ", ".join(f"{d}={steps[d].values[i]:g}" for d, i in zip(steps.dims, first))
        raise ValueError(f"steps: a run reaches the target at step 0, before training "
                         f"({where}); choose a harder target")
    return steps.sortby("batch_size")


# --------------------------------------------------------------------------- pure pieces


def fit_inverse_linear(batch_sizes: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Fit y = a + b/B with a, b > 0 on relative residuals; returns (a, b, rms log residual).

    Minimises Σ (log y − log(a + b/B))² (``least_squares`` over log a, log b), started from the
    least-squares line through (1/B, y) with rows weighted by 1/y.
    """
    x, y = 1.0 / np.asarray(batch_sizes, np.float64), np.asarray(values, np.float64)
    coef = np.linalg.lstsq(np.stack([1 / y, x / y], axis=1), np.ones_like(y), rcond=None)[0]
    a0 = coef[0] if coef[0] > 0 else 0.1 * y.min()
    b0 = coef[1] if coef[1] > 0 else 0.1 * y.min() / x.max()

    def residuals(p):
        return np.logaddexp(p[0], p[1] + np.log(x)) - np.log(y)

    fit = least_squares(residuals, np.log([a0, b0]), method="lm")
    return float(np.exp(fit.x[0])), float(np.exp(fit.x[1])), float(np.sqrt(np.mean(fit.fun**2)))


def fit_ols(batch_sizes: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Fit y = a + b/B by ordinary least squares on (1/B, y) (McCandlish et al. 2018); returns
    (a, b, rms log residual). Unconstrained: a or b may come out ≤ 0 (then B_crit is NaN, and
    the rms is NaN where the fitted curve is not positive)."""
    x, y = 1.0 / np.asarray(batch_sizes, np.float64), np.asarray(values, np.float64)
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y, rcond=None)
    fitted = a + b * x
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = float(np.sqrt(np.mean((np.log(fitted) - np.log(y))**2)))
    return float(a), float(b), rms


FITS = {"log": fit_inverse_linear, "ols": fit_ols}


def examples_crossing(batch_sizes: np.ndarray, examples: np.ndarray, level: float) -> float:
    """First batch size where ``examples`` exceed ``level``, linear in (log B, log E) between the
    bracketing points (B ascending); NaN if none exceeds it or the first already does."""
    above = np.asarray(examples) > level
    if not above.any() or above[0]:
        return math.nan
    j = int(np.argmax(above))
    (b0, b1), (e0, e1) = np.log(batch_sizes[j - 1:j + 1]), np.log(examples[j - 1:j + 1])
    return float(np.exp(b0 + (math.log(level) - e0) / (e1 - e0) * (b1 - b0)))


def refine_learning_rate(learning_rates: np.ndarray, steps: np.ndarray, i: int) -> float:
    """Vertex of the parabola in (log ε, log S) through grid points i − 1, i, i + 1, clipped to
    [ε_{i−1}, ε_{i+1}]; ε_i itself at the grid edge, by an infeasible neighbour, or if flat."""
    if i == 0 or i == len(learning_rates) - 1 or not np.isfinite(steps[i - 1:i + 2]).all():
        return float(learning_rates[i])
    x, y = np.log(learning_rates[i - 1:i + 2]), np.log(steps[i - 1:i + 2])
    c2, c1, _ = np.polyfit(x - x[1], y, 2)
    if not c2 > 0:
        return float(learning_rates[i])
    return float(np.exp(x[1] + np.clip(-c1 / (2 * c2), x[0] - x[1], x[2] - x[1])))


class _Estimate(NamedTuple):
    steps: np.ndarray  # [B] seed-combined steps at the best point (inf: infeasible)
    best: np.ndarray  # [B] flat index into (learning_rate, *others); -1: none
    lr_opt: np.ndarray  # [B] refined best learning rate (NaN: infeasible)
    at_edge: np.ndarray  # [B] bool
    s_fit: tuple[float, float, float] | None  # (S_min, E_min, rms) or None if too few points
    eps_fit: tuple[float, float] | None  # (1/ε_max, B_noise/ε_max)


def _estimate(values: np.ndarray, batch_sizes: np.ndarray, learning_rates: np.ndarray,
              final: np.ndarray | None, higher_is_better: bool, seeds: str,
              fit: str) -> _Estimate:
    """Steps 1, 2 and 4 of the module docstring on [B, L, O, seed] steps (O: other dims) and
    the final metric in the same layout (or None)."""
    num_b, num_lr, num_o, num_s = values.shape
    choice = choose(values.reshape(num_b, -1, num_s),
                    None if final is None else final.reshape(num_b, -1, num_s),
                    higher_is_better=higher_is_better, seeds=seeds)
    combined = choice.scores.reshape(num_b, num_lr, num_o)  # seed-combined steps
    best, steps = choice.index, np.where(choice.index >= 0, choice.score, np.inf)
    feasible = np.isfinite(steps)
    lr_index, other = np.divmod(np.maximum(best, 0), num_o)
    lr_opt, at_edge = np.full(num_b, np.nan), np.zeros(num_b, bool)
    for k in np.flatnonzero(feasible):
        lr_opt[k] = refine_learning_rate(learning_rates, combined[k, :, other[k]], lr_index[k])
        at_edge[k] = lr_index[k] in (0, len(learning_rates) - 1)
    s_fit = eps_fit = None
    if feasible.sum() >= MIN_POINTS:
        s_fit = FITS[fit](batch_sizes[feasible], steps[feasible])
    use = feasible & ~at_edge
    if use.sum() >= MIN_POINTS:
        eps_fit = FITS[fit](batch_sizes[use], 1.0 / lr_opt[use])[:2]
    return _Estimate(steps, best, lr_opt, at_edge, s_fit, eps_fit)


def _ratio(num: float, den: float) -> float:
    return num / den if num > 0 and den > 0 else math.nan


def _derived(est: _Estimate) -> np.ndarray:
    """[s_min, e_min, b_crit, eps_max, b_noise] of an estimate (NaN where not fitted)."""
    s = (math.nan,) * 3
    if est.s_fit:
        s = (est.s_fit[0], est.s_fit[1], _ratio(est.s_fit[1], est.s_fit[0]))
    e = ((_ratio(1.0, est.eps_fit[0]), _ratio(est.eps_fit[1], est.eps_fit[0])) if est.eps_fit
         else _NAN2)
    return np.array(s + e)


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return _NAN2
    low, high = np.percentile(samples, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def _t_interval(point: float, log_sd: float, dof: int,
                confidence: float) -> tuple[float, float]:
    """exp(log θ̂ ± t_dof·sd): a positive quantity's interval on the log scale."""
    if not (point > 0 and np.isfinite(log_sd) and dof >= 1):
        return _NAN2
    half = student_t.ppf(0.5 * (1 + confidence), dof) * log_sd
    return float(point * math.exp(-half)), float(point * math.exp(half))


def _log_sd(samples: np.ndarray) -> float:
    """Standard deviation of the logs of the positive samples (NaN if any failed)."""
    if samples.size < 2 or not np.all(samples > 0):
        return math.nan
    return float(np.std(np.log(samples), ddof=1))


def _jackknife_log_sd(leave_one_out: np.ndarray) -> float:
    n = leave_one_out.size
    if not np.all(leave_one_out > 0):
        return math.nan
    logs = np.log(leave_one_out)
    return math.sqrt((n - 1) / n * np.sum((logs - logs.mean()) ** 2))


def _pooled_seed_spread(values: np.ndarray, best: np.ndarray) -> tuple[float, int]:
    """(σ, ν): the spread of log steps between seeds at each batch size's best point
    (``best``: its flat index over the non-seed grid dims, −1 if infeasible), pooled."""
    squares, dof = 0.0, 0
    for k in np.flatnonzero(best >= 0):
        steps = values[k].reshape(-1, values.shape[-1])[best[k]]
        logs = np.log(steps[np.isfinite(steps) & (steps > 0)])
        squares += float(np.sum((logs - logs.mean()) ** 2)) if logs.size else 0.0
        dof += max(logs.size - 1, 0)
    return (math.sqrt(squares / dof) if dof else math.nan), dof


INTERVALS = ("pooled", "jackknife", "bootstrap", "none")


def _evaluation_gaps(result: SweepResult, steps: xr.DataArray) -> np.ndarray:
    """For every finite steps-to-target S of ``steps`` (same layout), S minus the evaluation
    step before it (0 for none): the target was crossed somewhere in (S − gap, S]."""
    gaps = np.zeros(steps.shape)
    every = result.metrics["step"]  # [batch_size, eval], or [eval] if shared
    for i, b in enumerate(steps["batch_size"].values):
        evaluated = every.sel(batch_size=b) if "batch_size" in every.dims else every
        evaluated = evaluated.values.astype(np.float64)
        evaluated = np.unique(evaluated[np.isfinite(evaluated)])
        found = steps.values[i]
        ok = np.isfinite(found)
        index = np.searchsorted(evaluated, found[ok])  # evaluated[index] == S
        before = np.where(index > 0, evaluated[np.maximum(index - 1, 0)], 0.0)
        gaps[i][ok] = found[ok] - before
    return gaps


# --------------------------------------------------------------------------- the measurement


def critical_batch_size(
    results: SweepResult | xr.DataArray,
    target: float | None = None,
    *,
    metric: str | None = None,
    threshold: float = 1.2,
    interval: str = "pooled",
    num_bootstrap: int = 200,
    confidence: float = 0.9,
    seed: int = 0,
    seeds: str = "mean",
    fit: str = "log",
) -> CriticalBatchSize:
    """S_min, E_min, B_crit (with intervals over seeds) and ε_opt(B) from a sweep.

    Args:
      results: a ``SweepResult`` (steps from ``sweep_steps_to_target(results, target, metric)``)
        or a DataArray of steps to target [batch_size, learning_rate, (momentum, …,) seed] with
        coordinates; inf = never reached or diverged, NaN = not run.
      target, metric: for a ``SweepResult``: the value of ``metric`` to reach (default metric:
        the sweep's); ``target=None`` uses the sweep's stored steps to target.
      threshold: the measured critical batch size is where E first exceeds threshold × E_min.
      interval: "pooled" (parametric bootstrap with the seed spread pooled over batch sizes:
        honest with few seeds), "jackknife" (leave one seed out, Student's t), "bootstrap"
        (seed resamples, percentiles) or "none" (module docstring, step 5).
      num_bootstrap: draws for "pooled" and "bootstrap" (0: no intervals).
      confidence: central probability of the intervals, in (0, 1).
      seed: seed of the bootstrap's NumPy generator.
      seeds: how seeds combine into a grid point's steps (``jaxsgd.analysis.best``): "mean"
        (one infeasible seed makes the point infeasible) or "median" (infeasible seeds count as
        never reaching the target).
      fit: how S(B) = S_min + E_min/B (and 1/ε_opt(B)) is fitted: "log" (relative residuals,
        Σ (log S − log fit)², a, b > 0) or "ols" (ordinary least squares on (1/B, S), as
        McCandlish et al. 2018; unconstrained).

    Example::

      cbs = critical_batch_size(result, 0.1, metric="test_error")
      cbs.b_crit, cbs.b_crit_interval, cbs.table.to_dataframe()
    """
    check_int("num_bootstrap", num_bootstrap, 0)
    if interval not in INTERVALS:
        raise ValueError(f"interval: {interval!r} is not one of {', '.join(INTERVALS)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence!r} is not in (0, 1)")
    if not threshold > 1:
        raise ValueError(f"threshold: {threshold!r} is not a number > 1")
    check_seed_rule(seeds)
    if fit not in FITS:
        raise ValueError(f"fit: {fit!r} is not one of {', '.join(FITS)}")
    final, higher_is_better = None, True
    if isinstance(results, SweepResult):
        if results.config.grows:
            raise ValueError(f"results: the sweep grows its batch (batch_growth = "
                             f"{results.config.batch_growth}); the critical batch size needs "
                             f"runs at one batch size each")
        steps = sweep_steps_to_target(results, target, metric)
        final = final_metric(results)
        higher_is_better = final_metric_name(results) == "test_accuracy"
    elif isinstance(results, xr.DataArray):
        if target is not None or metric is not None:
            raise ValueError("target/metric apply to a SweepResult; a DataArray already holds "
                             "steps to target")
        steps = results
    else:
        raise TypeError(f"results: expected a SweepResult or an xarray.DataArray of steps, got "
                        f"{type(results).__name__}")
    steps = _checked_steps(steps)
    gaps = (_evaluation_gaps(results, steps)
            if isinstance(results, SweepResult) and "step" in results.metrics
            else np.zeros(steps.shape))  # steps alone: the evaluation steps are unknown
    others = list(steps.dims[2:-1])
    batch_sizes = steps["batch_size"].values.astype(np.float64)
    learning_rates = steps["learning_rate"].values.astype(np.float64)
    values = steps.values.reshape(len(batch_sizes), len(learning_rates), -1, steps.sizes["seed"])
    gaps = gaps.reshape(values.shape)
    if final is not None:
        final = final.sortby("batch_size").transpose(*steps.dims).values.astype(
            np.float64).reshape(values.shape)
    rule = dict(higher_is_better=higher_is_better, seeds=seeds, fit=fit)

    est = _estimate(values, batch_sizes, learning_rates, final, **rule)
    feasible = np.isfinite(est.steps)
    if est.s_fit is None:
        raise ValueError(
            f"only {int(feasible.sum())} batch size(s) reach the target "
            f"({[int(b) for b in batch_sizes[feasible]]}); the fit needs at least {MIN_POINTS}. "
            f"Infeasible (every point diverged or never reached it): "
            f"{[int(b) for b in batch_sizes[~feasible]]}")
    point = [float(v) for v in _derived(est)]
    e_min = point[1]
    examples = est.steps * batch_sizes

    rng = np.random.default_rng(seed)

    def redo(pick, sigma=0.0, dither=True):  # steps 1, 2, 4 on the seeds ``pick``; with
        v = values[..., pick]  # ``dither``, runs redrawn (inf stays inf) and the crossings
        if dither:             # moved within their evaluation intervals
            v = v * np.exp(sigma * rng.standard_normal(v.shape)) - rng.uniform(
                size=v.shape) * gaps[..., pick]
        return _derived(_estimate(v, batch_sizes, learning_rates,
                                  None if final is None else final[..., pick], **rule))

    num_seeds = values.shape[-1]
    every = np.arange(num_seeds)
    intervals = [_NAN2] * 5
    if num_seeds > 1 and interval == "pooled" and num_bootstrap > 1:
        sigma, dof = _pooled_seed_spread(values, est.best)
        draws = np.array([redo(every, sigma) for _ in range(num_bootstrap)])
        intervals = [_t_interval(point[j], _log_sd(draws[:, j]), dof, confidence)
                     for j in range(5)]
    elif num_seeds > 1 and interval == "jackknife":
        loo = np.array([redo(np.delete(every, i), dither=False) for i in range(num_seeds)])
        intervals = [_t_interval(point[j], _jackknife_log_sd(loo[:, j]), num_seeds - 1,
                                 confidence) for j in range(5)]
    elif num_seeds > 1 and interval == "bootstrap" and num_bootstrap:
        boot = np.array([redo(rng.integers(0, num_seeds, num_seeds))
                         for _ in range(num_bootstrap)])
        intervals = [_percentile_interval(boot[:, j], confidence) for j in range(5)]

    grid = np.unravel_index(np.where(feasible, est.best, 0), values.shape[1:3])
    search = {"learning_rate": np.where(feasible, learning_rates[grid[0]], np.nan)}
    other_index = np.unravel_index(grid[1], [steps.sizes[d] for d in others]) if others else ()
    for d, j in zip(others, other_index):
        search[d] = np.where(feasible, steps[d].values[j].astype(np.float64), np.nan)
    table = xr.Dataset(
        {"feasible": ("batch_size", feasible),
         "steps": ("batch_size", est.steps),
         "examples": ("batch_size", examples),
         **{d: ("batch_size", v) for d, v in search.items()},
         "learning_rate_opt": ("batch_size", est.lr_opt),
         "learning_rate_at_edge": ("batch_size", est.at_edge),
         "steps_fit": ("batch_size", point[0] + e_min / batch_sizes)},
        coords={"batch_size": steps["batch_size"].values}, attrs=dict(steps.attrs))
    return CriticalBatchSize(
        s_min=point[0], e_min=e_min, b_crit=point[2],
        s_min_interval=intervals[0], e_min_interval=intervals[1], b_crit_interval=intervals[2],
        b_crit_measured=examples_crossing(batch_sizes[feasible], examples[feasible],
                                          threshold * e_min),
        eps_max=point[3], b_noise=point[4],
        eps_max_interval=intervals[3], b_noise_interval=intervals[4],
        fit_rms=est.s_fit[2], table=table, threshold=threshold, confidence=confidence)


# --------------------------------------------------------------------------- figure


def plot_critical_batch_size(cbs: CriticalBatchSize,
                             path: str | os.PathLike | None = None) -> Figure:
    """(a) Steps to target vs batch size with the fit, perfect scaling and B_crit; (b) the best
    learning rate (grid and refined) with the ε_opt(B) fit. Saved as PDF + PNG if ``path``."""
    t = cbs.table
    b = t["batch_size"].values.astype(np.float64)
    ok = t["feasible"].values
    curve = np.geomspace(b.min(), b.max(), 100)
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 4.4), layout="constrained")
        ax_s, ax_lr = fig.subplots(2, 1, sharex=True)
        ax_s.plot(b[ok], t["steps"].values[ok], "o", color="k", label="best per batch size")
        ax_s.plot(curve, cbs.s_min * (1 + cbs.b_crit / curve), "-", color="C0",
                  label=rf"$S_{{min}}(1 + B_{{crit}}/B)$, $B_{{crit}}$ = {cbs.b_crit:.3g}")
        ax_s.plot(curve, cbs.e_min / curve, "--", color="0.5", linewidth=0.8,
                  label="perfect scaling $E_{min}/B$")
        if math.isfinite(cbs.b_crit_measured):
            ax_s.axvline(cbs.b_crit_measured, color="C3", linestyle=":", linewidth=0.8,
                         label=rf"$E = {cbs.threshold:g}\,E_{{min}}$ at "
                               f"B = {cbs.b_crit_measured:.3g}")
        ax_s.set(xscale="log", yscale="log", ylabel="steps to target\n(optimizer steps)",
                 ylim=(0.5 * min(cbs.s_min, t["steps"].values[ok].min()), None))
        plain_log_labels(ax_s.yaxis)
        ax_s.legend(loc="lower left")
        ax_lr.plot(b[ok], t["learning_rate"].values[ok], "o", mfc="none", color="k", label="grid")
        ax_lr.plot(b[ok], t["learning_rate_opt"].values[ok], "o", color="k", label="refined")
        if math.isfinite(cbs.b_noise):
            ax_lr.plot(curve, cbs.eps_max / (1 + cbs.b_noise / curve), "-", color="C0",
                       label=rf"$\epsilon_{{max}}/(1 + B_{{noise}}/B)$, $B_{{noise}}$ = "
                             f"{cbs.b_noise:.3g}")
        ax_lr.set(xscale="log", yscale="log", xlabel="batch size (examples)",
                  ylabel="best learning rate")
        tick_at(ax_lr.xaxis, [int(v) for v in b])  # the batch sizes, plainly (shared x)
        plain_log_labels(ax_lr.yaxis)
        # Below the axes: inside, the legend covered the rising B_noise curve.
        ax_lr.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    if path is not None:
        save_figure(fig, path)
    return fig
