"""The sweep at a glance: the best hyperparameters per batch size and a plain-text table.

For each batch size the *best grid point* is chosen over every swept grid dimension except
``seed`` (learning rate, and momentum, weight decay, … when they are swept), from seed means:

* with a target: fewest steps to target (mean over seeds; a point where any seed never reaches
  the target, or diverged, scores inf); ties, and batch sizes where no point reaches the target,
  are decided by the final test metric;
* without a target: the best final test accuracy (mean over seeds), or the lowest final test
  loss for regression.

A point where any seed diverged has no final-metric mean (NaN) and is never chosen on it. A batch
size where every point diverged has no best point (NaN coordinates).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from jaxsgd.config import TARGET_METRICS
from jaxsgd.results import SweepResult, eval_dim, grid_dims


def final_metric_name(result: SweepResult) -> str:
    """"test_accuracy" for classification, "test_loss" for regression (no accuracy recorded)."""
    return "test_accuracy" if "test_accuracy" in result.metrics else "test_loss"


def final_metric(result: SweepResult) -> xr.DataArray:
    """The final test metric of every run: [batch_size, *grid dims] (NaN if it diverged)."""
    metric = result.metrics[final_metric_name(result)]
    return metric.isel({eval_dim(result.config): -1}, drop=True)


def search_dims(result: SweepResult) -> list[str]:
    """Grid dimensions the best point is chosen over: every result grid dim except seed."""
    return [d for d in grid_dims(result.config) if d != "seed"]


def _best_index(result: SweepResult, batch_size: int) -> dict[str, int] | None:
    """Integer position of the best point along each search dim, or None if all diverged."""
    dims = search_dims(result)
    final = final_metric(result).sel(batch_size=batch_size)
    # Seed mean with skipna=False: a diverged seed makes the point's mean NaN.
    final_mean = final.mean("seed", skipna=False).transpose(*dims).values.ravel()
    higher_is_better = final_metric_name(result) == "test_accuracy"
    secondary = -final_mean if higher_is_better else final_mean
    secondary = np.where(np.isnan(secondary), np.inf, secondary)
    if "steps_to_target" in result.metrics:
        steps = result.metrics["steps_to_target"].sel(batch_size=batch_size)
        primary = steps.mean("seed", skipna=False).transpose(*dims).values.ravel()
        primary = np.where(np.isnan(primary), np.inf, primary)
    else:
        primary = np.zeros_like(secondary)
    best = int(np.lexsort((secondary, primary))[0])
    if not (math.isfinite(primary[best]) or math.isfinite(secondary[best])):
        return None
    shape = [final.sizes[d] for d in dims]
    return dict(zip(dims, (int(i) for i in np.unravel_index(best, shape))))


def best_hyperparameters(result: SweepResult) -> xr.Dataset:
    """The best grid point per batch size: one [batch_size] variable per search dim.

    Values are NaN for a batch size where every run diverged (see the module docstring).
    """
    metrics = result.metrics
    batch_sizes = metrics["batch_size"].values
    values = {d: np.full(len(batch_sizes), np.nan) for d in search_dims(result)}
    for i, b in enumerate(batch_sizes):
        index = _best_index(result, int(b))
        if index is None:
            continue
        for d, j in index.items():
            values[d][i] = float(metrics[d].values[j])
    return xr.Dataset({d: ("batch_size", v) for d, v in values.items()},
                      coords={"batch_size": batch_sizes})


def best_learning_rate(result: SweepResult) -> xr.DataArray:
    """Best learning rate per batch size: [batch_size] (NaN where every run diverged)."""
    return best_hyperparameters(result)["learning_rate"]


def best_runs(result: SweepResult) -> xr.Dataset:
    """Metrics at the best point of each batch size: [batch_size, seed, ...].

    The search dims become [batch_size] coordinates holding the best values (as in
    ``best_hyperparameters``); batch sizes without a best point are all NaN.
    """
    dims = search_dims(result)
    best = best_hyperparameters(result)
    parts = []
    for b in result.metrics["batch_size"].values:
        group = result.metrics.sel(batch_size=[b])
        index = _best_index(result, int(b))
        if index is None:
            picked = group.isel({d: 0 for d in dims}, drop=True)
            picked = picked.map(lambda v: v.astype(np.float64) * np.nan
                                if v.dtype.kind in "fiub" else v)
        else:
            picked = group.isel(index, drop=True)
        parts.append(picked)
    runs = xr.concat(parts, dim="batch_size", coords="different", compat="equals", join="outer")
    return runs.assign_coords({d: ("batch_size", best[d].values) for d in dims})


# --------------------------------------------------------------------------- table


def _format_value(value: float) -> str:
    """A grid value, compactly: 0.1, 0.03, 1e-05."""
    return "-" if not math.isfinite(value) else f"{value:g}"


def _format_count(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _format_spread(values: np.ndarray) -> str:
    """Mean ± sample std over seeds; '-' if any seed diverged (NaN)."""
    values = np.asarray(values, np.float64)
    if values.size == 0 or np.isnan(values).any():
        return "-"
    mean = values.mean()
    digits = 3 if abs(mean) < 10 else 1
    if values.size == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _header(result: SweepResult) -> str:
    c = result.config
    seeds = result.metrics.sizes.get("seed", 1)
    parts = [f"{c.data} / {c.model} / {c.optimizer} ({c.schedule})",
             f"budget {c.budget} {c.budget_unit}"]
    if "steps_to_target" in result.metrics:
        direction = "<=" if TARGET_METRICS[c.target_metric] == "min" else ">="
        parts.append(f"target {c.target_metric} {direction} {c.target_value:g}")
    parts.append(f"best over {', '.join(search_dims(result))}; mean over {seeds} seed(s)")
    return " | ".join(parts)


def summarize(result: SweepResult) -> str:
    """A plain-text table, one row per batch size, of the best grid point.

    Columns: batch size; optimizer steps per run; the best value of each search dim (learning
    rate, and momentum, weight decay, … when swept); if the sweep has a target, steps and
    examples to target at that point (mean over seeds, 'never' if not every seed reaches it);
    the final test accuracy (test loss for regression), mean ± std over seeds; and diverged runs
    out of all runs at that batch size (every grid point). The first line names the sweep.
    """
    config, metrics = result.config, result.metrics
    dims = search_dims(result)
    has_target = "steps_to_target" in metrics
    best = best_hyperparameters(result)
    runs = best_runs(result)
    final_name = final_metric_name(result)
    metric_title = final_name.replace("_", " ")
    titles = ["batch size", "steps/run", *(d.replace("_", " ") for d in dims)]
    if has_target:
        titles += ["steps to target", "examples to target"]
    titles += [f"final {metric_title}", "diverged"]

    rows = []
    for b in metrics["batch_size"].values:
        b = int(b)
        row = [str(b), str(config.num_steps(b))]
        row += [_format_value(float(best[d].sel(batch_size=b))) for d in dims]
        at_best = runs.sel(batch_size=b)
        if has_target:
            row.append(_format_count(float(at_best["steps_to_target"].mean("seed", skipna=False))))
            row.append(_format_count(
                float(at_best["examples_to_target"].mean("seed", skipna=False))))
        row.append(_format_spread(at_best[final_name].isel({eval_dim(config): -1}).values))
        diverged = metrics["diverged"].sel(batch_size=b)
        row.append(f"{int(diverged.sum())}/{diverged.size}")
        rows.append(row)

    widths = [max(len(t), *(len(r[i]) for r in rows)) for i, t in enumerate(titles)]
    lines = [_header(result),
             "  ".join(t.rjust(w) for t, w in zip(titles, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    if not metrics.attrs.get("complete", 1):
        missing = sorted(set(config.batch_sizes) - {int(b) for b in metrics["batch_size"].values})
        lines.append(f"incomplete sweep: batch size(s) {', '.join(map(str, missing))} not "
                     "finished")
    return "\n".join(lines)
