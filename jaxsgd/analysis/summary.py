"""The sweep at a glance: the best hyperparameters per batch size and a plain-text table.

The best grid point of each batch size is chosen by the one rule of ``jaxsgd.analysis.best``
(fewest steps to target, mean over seeds; ties by the final test metric, then grid order).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from jaxsgd.analysis.best import best_points, final_metric_name, search_dims
from jaxsgd.engine.provenance import runtime_text
from jaxsgd.engine.results import SweepResult
from jaxsgd.targets import target_direction


def best_hyperparameters(result: SweepResult, *, seeds: str = "mean") -> xr.Dataset:
    """The best grid point per batch size (``jaxsgd.analysis.best``): one [batch_size] variable
    per search dim, NaN for a batch size without a best point (every run diverged)."""
    return best_points(result, seeds=seeds)[search_dims(result)]


def best_learning_rate(result: SweepResult) -> xr.DataArray:
    """Best learning rate per batch size: [batch_size] (NaN where every run diverged)."""
    return best_hyperparameters(result)["learning_rate"]


def best_runs(result: SweepResult) -> xr.Dataset:
    """Metrics at the best point of each batch size: [batch_size, seed, ...].

    The search dims become [batch_size] coordinates holding the best values (as in
    ``best_hyperparameters``); batch sizes without a best point are all NaN.
    """
    dims = search_dims(result)
    best = best_points(result)
    shape = [result.metrics.sizes[d] for d in dims]
    parts = []
    for b, flat in zip(result.metrics["batch_size"].values, best["index"].values):
        group = result.metrics.sel(batch_size=[b])
        index = dict(zip(dims, (int(i) for i in np.unravel_index(max(flat, 0), shape))))
        if flat < 0:
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
    if c.grows:
        parts.append(f"batch ×{c.batch_growth} at "
                     f"{', '.join(f'{b:g}' for b in c.growth_boundaries)} of the budget")
    if c.lr_scaling != "none":
        parts.append(f"learning rate {c.lr_scaling} in B from B = {c.lr_batch_size}")
    if "steps_to_target" in result.metrics:
        direction = "<=" if target_direction(c.target_metric) == "min" else ">="
        parts.append(f"target {c.target_metric} {direction} {c.target_value:g}")
    parts.append(f"best over {', '.join(search_dims(result))}; mean over {seeds} seed(s)")
    lines = [" | ".join(parts)]
    run = (result.provenance or {}).get("run")
    if run:  # what was really run: the user's own parts by their names, with sizes
        d, m = run["data"], run["model"]
        task = f"{d['num_classes']} classes" if d["num_classes"] else "regression"
        loss = run["loss"]["name"] or "by data set"
        lines.append(f"data {d['name']} ({d['num_train']} train, {d['num_test']} test, inputs "
                     f"{tuple(d['input_shape'])}, {task}) | model {m['name']} "
                     f"({m['num_parameters']:,} parameters) | loss {loss} | optimizer "
                     f"{run['optimizer']['name']}")
    runtime = (result.provenance or {}).get("runtime")
    if runtime:  # on CPU the device count sets float rounding (README, Reproducibility)
        lines.append(f"computed on {runtime_text(runtime)}")
    return "\n".join(lines)


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
        row = ["→".join(str(st.batch_size) for st in config.stages(b)),
               str(config.num_steps(b))]
        row += [_format_value(float(best[d].sel(batch_size=b))) for d in dims]
        at_best = runs.sel(batch_size=b)
        if has_target:
            row.append(_format_count(float(at_best["steps_to_target"].mean("seed", skipna=False))))
            row.append(_format_count(
                float(at_best["examples_to_target"].mean("seed", skipna=False))))
        row.append(_format_spread(at_best[final_name].isel({config.eval_dim: -1}).values))
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
