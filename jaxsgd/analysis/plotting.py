"""Figures of a sweep, in the shared style (``jaxsgd.style``).

  plot_sweep()        the two-panel summary figure of a sweep
  plot_loss_curves()  a metric against examples seen or optimizer steps, one line per batch
                      size, seed spread as a band

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot; each
function returns its figure, which displays itself in a notebook (``jaxsgd.style.figure``).
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from jaxsgd.targets import target_direction
from jaxsgd.engine.results import SweepResult
from jaxsgd.analysis.best import final_metric_name, search_dims
from jaxsgd.analysis.summary import best_hyperparameters, best_runs
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, tick_at, use_style


def _seed_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min, max over the last axis (seeds); NaN where any seed is NaN (diverged)."""
    values = np.asarray(values, np.float64)
    return values.mean(-1), values.min(-1), values.max(-1)


def _loss_scale(ax: Axes, values: np.ndarray) -> None:
    """Log y axis for a positive loss that spans more than a decade; linear otherwise."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis)


def _best_label(result: SweepResult) -> str:
    """'best learning rate', or 'best learning rate, momentum' when more is swept."""
    return "best " + ", ".join(d.replace("_", " ") for d in search_dims(result))


def _metric_label(name: str) -> str:
    return {"test_accuracy": "final test accuracy", "test_loss": "final test loss"}[name]


def _plot_learning_rate_panel(ax: Axes, result: SweepResult) -> None:
    """(a) Final test metric vs learning rate, one line per batch size, min–max band over seeds.

    Other swept grid dims (momentum, …) are held at each batch size's best point.
    """
    metrics, config = result.metrics, result.config
    name = final_metric_name(result)
    best = best_hyperparameters(result)
    others = [d for d in search_dims(result) if d != "learning_rate"]
    final = metrics[name].isel({config.eval_dim: -1}, drop=True)
    learning_rates = metrics["learning_rate"].values
    colors = mpl.colormaps["viridis"](np.linspace(0.0, 0.85, metrics.sizes["batch_size"]))
    marked = False
    for k, (color, b) in enumerate(zip(colors, metrics["batch_size"].values)):
        curve = final.sel(batch_size=b)
        at = {d: float(best[d].sel(batch_size=b)) for d in others}
        if any(np.isnan(v) for v in at.values()):  # every run diverged
            at = {d: metrics[d].values[0] for d in others}
        curve = curve.sel(at).transpose("learning_rate", "seed").values
        mean, low, high = _seed_band(curve)
        ax.plot(learning_rates, mean, "o-", color=color, label=f"B = {int(b)}")
        ax.fill_between(learning_rates, low, high, color=color, alpha=0.25, linewidth=0)
        # A learning rate where any seed diverged has no mean: marked at the axis' foot, one
        # row per batch size so that marks at the same rate do not hide each other.
        lost = np.isnan(curve).any(axis=1)
        if lost.any():
            ax.plot(learning_rates[lost], np.full(int(lost.sum()), 0.04 * k), "x", color=color,
                    transform=ax.get_xaxis_transform(), clip_on=False, markersize=5,
                    label=None if marked else "diverged (a seed)")
            marked = True
    ax.set_xscale("log")
    tick_at(ax.xaxis, learning_rates)
    if name == "test_loss":
        _loss_scale(ax, final.values)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(_metric_label(name))
    # Above the panel: inside, it covered the curves of the small batches.
    title = "batch size (examples)" + (f"; {', '.join(others)} at each one's best" if others
                                       else "")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("diverged"))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], title=title,
              title_fontsize=6.5, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.04))


def _plot_batch_size_panel(ax: Axes, result: SweepResult) -> None:
    """(b) Steps to target (or final test metric) vs batch size at the best grid point."""
    metrics, config = result.metrics, result.config
    runs = best_runs(result)
    batch_sizes = metrics["batch_size"].values.astype(np.float64)
    ax.set_xscale("log")
    tick_at(ax.xaxis, batch_sizes)
    ax.set_xlabel("batch size (examples)")
    if "steps_to_target" not in metrics:
        name = final_metric_name(result)
        values = runs[name].isel({config.eval_dim: -1}).transpose("batch_size", "seed").values
        mean, low, high = _seed_band(values)
        ax.plot(batch_sizes, mean, "o-", color="k")
        ax.fill_between(batch_sizes, low, high, color="k", alpha=0.2, linewidth=0)
        if name == "test_loss":
            _loss_scale(ax, values)
        ax.set_ylabel(f"{_metric_label(name)}\n({_best_label(result)})")
        return
    steps = runs["steps_to_target"].transpose("batch_size", "seed").values
    # Mean over seeds; inf (some seed never reached the target) is not drawn.
    mean, low, high = (np.where(np.isfinite(v), v, np.nan) for v in _seed_band(steps))
    reached = np.isfinite(mean)
    ax.set_yscale("log")
    plain_log_labels(ax.yaxis)
    ax.set_ylabel("steps to target\n(optimizer steps)")
    direction = "≤" if target_direction(config.target_metric) == "min" else "≥"
    ax.set_title(f"target: {config.target_metric.replace('_', ' ')} {direction} "
                 f"{config.target_value:g}", fontsize=7)
    if not reached.any():
        ax.text(0.5, 0.5, "no batch size reached the target", transform=ax.transAxes,
                ha="center", va="center", fontsize=7)
        ax.set_xlim(batch_sizes.min() / 1.5, batch_sizes.max() * 1.5)
        return
    yerr = np.stack([mean - low, high - mean])
    ax.errorbar(batch_sizes[reached], mean[reached], yerr=yerr[:, reached], fmt="o-", color="k",
                capsize=1.5, label=f"{_best_label(result)}\n(min–max over seeds)")
    first = int(np.argmax(reached))  # smallest batch size that reached the target
    ideal = mean[first] * batch_sizes[first] / batch_sizes
    ax.plot(batch_sizes, ideal, "--", color="0.5", linewidth=0.8,
            label=r"perfect scaling $S \propto 1/B$")
    for b in batch_sizes[~reached]:
        ax.annotate("not\nreached", (b, 0.98), xycoords=("data", "axes fraction"), ha="center",
                    va="top", fontsize=6, color="0.4")
    ax.legend()


def plot_sweep(result: SweepResult, path: str | os.PathLike | None = None) -> Figure:
    """The summary figure of a sweep; written as ``path.pdf`` + ``path.png`` if ``path`` is given.

    (a) Final test accuracy (test loss for regression, log axis if it spans decades) vs learning
        rate, one line per batch size: mean over seeds with a min–max band; a learning rate
        where any seed diverged is missing from its line and marked × at the panel's foot.
    (b) With a target: steps to target vs batch size (log–log) at each batch size's best grid
        point (``jaxsgd.analysis.summary``), with the perfect-scaling line S ∝ 1/B through the smallest
        batch size that reached the target. Without one: the final test metric vs batch size
        at the best learning rate.

    Returns the ``Figure`` (not registered with pyplot; display it in a notebook as ``fig``).
    """
    with use_style():
        fig = figure(figsize=(COLUMN_WIDTH, 4.6), layout="constrained")
        ax_lr, ax_b = fig.subplots(2, 1)
        _plot_learning_rate_panel(ax_lr, result)
        _plot_batch_size_panel(ax_b, result)
        for ax, label in ((ax_lr, "(a)"), (ax_b, "(b)")):
            ax.text(-0.16, 1.02, label, transform=ax.transAxes, fontweight="bold",
                    va="bottom", ha="left")
    if path is not None:
        save_figure(fig, path)
    return fig


def _batch_label(config, batch_size: int) -> str:
    """"B = 16", or a batch-size schedule's stages "B = 16 → 80 → 400"."""
    return "B = " + " → ".join(str(st.batch_size) for st in config.stages(batch_size))


def plot_loss_curves(result: SweepResult, metric: str = "train_loss", x: str = "examples", *,
                     select: dict | None = None, path: str | os.PathLike | None = None,
                     ax: Axes | None = None, label: str | None = None,
                     color: Any = None) -> Figure:
    """``metric`` at every evaluation against ``x`` ("examples" seen or optimizer "step"),
    log–log, one line per batch size: the mean over seeds with a min–max band.

    Several sweeps on one axes (e.g. one per schedule): pass the same ``ax`` with a ``label``
    (the line's name, followed by its batch sizes) and a ``color`` for each sweep; by default
    lines are named by their batch sizes and coloured along viridis.

    Each batch size is drawn at ``select`` (grid coordinates, e.g. ``{"learning_rate": 0.1}``;
    every swept dimension other than the seed must be given, or is held at) its best grid
    point (``jaxsgd.analysis.summary.best_runs``). Evaluations at or after a run's divergence
    are NaN and drop out of the band. The step 0 evaluation is left out on a log x axis.
    Returns the figure (drawn into ``ax`` when given); written as PDF + PNG with ``path``.
    """
    if x not in ("examples", "step"):
        raise ValueError(f"x: {x!r} is not 'examples' or 'step'")
    if metric not in result.metrics:
        raise ValueError(f"metric: {metric!r} is not a result variable; variables: "
                         f"{', '.join(sorted(result.metrics.data_vars))}")
    dim = result.config.eval_dim
    runs = result.metrics.sel(select) if select else best_runs(result)
    extra = [d for d in runs[metric].dims if d not in ("batch_size", "seed", dim)]
    if extra:
        raise ValueError(f"select: also give {', '.join(extra)} (swept: one value each is "
                         f"drawn)")
    with use_style():
        if ax is None:
            fig = figure(layout="constrained")
            ax = fig.subplots()
        else:
            fig = ax.figure
        batch_sizes = runs["batch_size"].values
        colors = (mpl.colormaps["viridis"](np.linspace(0.0, 0.85, len(batch_sizes)))
                  if color is None else [color] * len(batch_sizes))
        drawn = []
        for color, b in zip(colors, batch_sizes):
            run = runs.sel(batch_size=b)
            values = run[metric].transpose(dim, "seed").values
            xs = np.asarray(run[x].values if x in run.coords else run[dim].values, np.float64)
            keep = xs > 0
            mean, low, high = _seed_band(values[keep])
            ax.fill_between(xs[keep], low, high, color=color, alpha=0.2, linewidth=0)
            name = _batch_label(result.config, int(b))
            ax.plot(xs[keep], mean, color=color,
                    label=name if label is None else f"{label} ({name})")
            drawn.append(values[keep])
        ax.set_xscale("log")
        plain_log_labels(ax.xaxis)
        _loss_scale(ax, np.concatenate([v.ravel() for v in drawn]) if drawn else np.ones(1))
        ax.set_xlabel("examples seen" if x == "examples" else "optimizer steps")
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend()
    if path is not None:
        save_figure(fig, path)
    return fig
