"""Tests for jaxsgd.analysis.plotting: the shared style, PDF + PNG output, and the sweep figure."""

import math

import matplotlib as mpl
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from jaxsgd.config import Grid, SweepConfig
from jaxsgd.analysis.plotting import plot_sweep
from jaxsgd.style import STYLE, save_figure, use_style
from jaxsgd.engine.results import SweepResult

BATCH_SIZES = (16, 64, 256)
LEARNING_RATES = (0.01, 0.1, 1.0)


def _result(*, target=True, regression=False, never=False, momentum=False):
    """A SweepResult in the layout of jaxsgd.engine.results with made-up but plausible metrics.

    Learning rate 1.0 diverges at batch size 16 (NaN metrics, inf steps); `never` makes no run
    reach the target.
    """
    grid = Grid(learning_rate=LEARNING_RATES, seed=(0, 1),
                momentum=(0.0, 0.9) if momentum else (0.9,))
    config = SweepConfig(
        data="linear_regression" if regression else "digits",
        optimizer="momentum" if momentum else "sgd",
        batch_sizes=BATCH_SIZES, budget=2048, eval_every=512, grid=grid,
        target_metric=("test_loss" if regression else "test_error") if target else None,
        target_value=0.5 if target else None)
    dims = ["batch_size", "learning_rate", *(["momentum"] if momentum else []), "seed"]
    shape = [len(BATCH_SIZES), len(LEARNING_RATES), *([2] if momentum else []), 2]
    points = np.arange(0, 2049, 512)
    rng = np.random.default_rng(0)
    progress = 1 - np.exp(-points / 600.0)
    accuracy = 0.1 + 0.8 * progress * rng.uniform(0.8, 1.0, size=(*shape, 1))
    accuracy[0, 2] = np.nan  # batch size 16, learning rate 1.0: diverged
    diverged = np.isnan(accuracy[..., -1])
    steps = np.where(accuracy >= 0.5, points // np.reshape(BATCH_SIZES, (-1,) + (1,) * len(shape)),
                     np.inf)
    steps = np.min(steps, axis=-1)
    if never:
        steps[:] = np.inf
    coords = {"batch_size": list(BATCH_SIZES), "examples": points,
              "step": (("batch_size", "examples"), [points // b for b in BATCH_SIZES]),
              "learning_rate": list(LEARNING_RATES), "seed": [0, 1],
              "weight_decay": 0.0, "warmup": 0.0, "decay": 0.1}
    coords["momentum"] = [0.0, 0.9] if momentum else 0.9
    data = {
        "test_loss": ([*dims, "examples"], 2.5 * (1 - accuracy) + 0.01),
        "diverged": (dims, diverged),
        "diverged_step": (dims, np.where(diverged, 5, -1).astype(np.int32)),
        "run": (dims, np.zeros(shape, np.int32)),
    }
    if not regression:
        data["test_accuracy"] = ([*dims, "examples"], accuracy)
    if target:
        data["steps_to_target"] = (dims, steps)
        data["examples_to_target"] = (dims, steps * np.reshape(BATCH_SIZES, (-1,) + (1,) *
                                                               (len(shape) - 1)))
    metrics = xr.Dataset(data, coords=coords)
    metrics.attrs["complete"] = 1
    return SweepResult(config=config, metrics=metrics)


def _assert_written(base):
    for suffix in (".pdf", ".png"):
        path = base.with_name(base.name + suffix)
        assert path.is_file(), path
        assert path.stat().st_size > 1000, path
    assert base.with_name(base.name + ".pdf").read_bytes().startswith(b"%PDF")
    assert base.with_name(base.name + ".png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kind", ["classification-target", "no-target", "regression", "never-reached", "momentum"])
def test_plot_sweep_writes_pdf_and_png(tmp_path, kind):
    result = _result(target=kind != "no-target", regression=kind == "regression",
                     never=kind == "never-reached", momentum=kind == "momentum")
    base = tmp_path / "figures" / "summary"

    fig = plot_sweep(result, base)

    _assert_written(base)
    assert isinstance(fig, Figure)
    ax_lr, ax_b = fig.axes
    assert ax_lr.get_xscale() == "log" and ax_lr.get_xlabel() == "learning rate"
    assert ax_b.get_xlabel() == "batch size (examples)"
    curves = [line for line in ax_lr.get_lines() if line.get_marker() != "x"]
    assert len(curves) == len(BATCH_SIZES)  # one line per batch size (and × marks)
    if kind in ("classification-target", "regression", "never-reached", "momentum"):
        assert ax_b.get_yscale() == "log" and ax_b.get_xscale() == "log"
        assert ax_b.get_ylabel() == "steps to target\n(optimizer steps)"
    else:
        assert ax_b.get_ylabel().startswith("final test accuracy")
    if kind == "regression":
        assert ax_lr.get_ylabel() == "final test loss"


def test_diverged_runs_are_missing_and_perfect_scaling_goes_through_smallest_batch():
    result = _result()
    fig = plot_sweep(result)
    ax_lr, ax_b = fig.axes

    line_16 = ax_lr.get_lines()[0]  # batch size 16; learning rate 1.0 diverged
    assert np.isnan(line_16.get_ydata()[2]) and np.isfinite(line_16.get_ydata()[:2]).all()
    ideal = next(line for line in ax_b.get_lines() if line.get_linestyle() == "--")
    x, y = np.asarray(ideal.get_xdata()), np.asarray(ideal.get_ydata())
    np.testing.assert_allclose(x * y, x[0] * y[0])  # S ∝ 1/B
    steps_16 = result.metrics["steps_to_target"].sel(batch_size=16).mean("seed").values
    assert math.isclose(y[0], np.min(steps_16))  # through the best point at the smallest B


def test_save_figure_writes_both_formats_and_ignores_a_suffix(tmp_path):
    fig = Figure()
    fig.subplots().plot([1, 2], [3, 4])

    written = save_figure(fig, tmp_path / "new" / "plain.png")

    assert [p.name for p in written] == ["plain.pdf", "plain.png"]
    _assert_written(tmp_path / "new" / "plain")


def test_use_style_is_scoped():
    before = mpl.rcParams["axes.spines.top"]
    with use_style():
        assert mpl.rcParams["axes.spines.top"] is False
        assert mpl.rcParams["axes.spines.right"] is False
        assert mpl.rcParams["figure.figsize"][0] == pytest.approx(3.4)
        assert mpl.rcParams["font.size"] <= 9
    assert mpl.rcParams["axes.spines.top"] == before
    assert set(STYLE) <= set(mpl.rcParams)


def test_loss_curves_draw_a_line_and_a_seed_band_per_batch_size_and_show_in_a_notebook():
    from matplotlib.collections import PolyCollection

    from jaxsgd.analysis.plotting import plot_loss_curves

    result = _result()
    fig = plot_loss_curves(result, "test_loss")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == [f"B = {b}" for b in BATCH_SIZES]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(BATCH_SIZES)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "examples seen"
    assert ax.get_ylabel() == "test loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"B = {b}" for b in BATCH_SIZES]
    x = ax.lines[0].get_xdata()
    assert x.min() > 0  # the step-0 evaluation is left out of the log axis
    # At a chosen learning rate, against steps; B = 16 at rate 1.0 diverged: all NaN.
    fig = plot_loss_curves(result, "test_accuracy", x="step", select={"learning_rate": 1.0})
    assert fig.axes[0].get_xlabel() == "optimizer steps"
    assert np.all(np.isnan(fig.axes[0].lines[0].get_ydata()))
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # what a notebook displays
    with pytest.raises(ValueError, match="metric: 'loss' is not a result variable"):
        plot_loss_curves(result, "loss")
    with pytest.raises(ValueError, match="x: 'time'"):
        plot_loss_curves(result, x="time")


def test_critical_batch_figure_labels_batch_sizes_plainly_and_keeps_its_legends_clear():
    from jaxsgd.analysis.critical import critical_batch_size, plot_critical_batch_size

    b = np.array([16, 32, 64, 128, 256, 512])
    steps = 40 * (1 + 300 / b)
    table = xr.DataArray(
        np.stack([steps * f for f in (1.0, 1.3, 2.0)], axis=1)[..., None],
        dims=("batch_size", "learning_rate", "seed"),
        coords={"batch_size": b, "learning_rate": [0.1, 0.03, 0.01], "seed": [0]})
    fig = plot_critical_batch_size(critical_batch_size(table, interval="none"))
    ax_s, ax_lr = fig.axes
    fig.canvas.draw()
    assert [t.get_text() for t in ax_lr.get_xticklabels()] == [str(v) for v in b]
    assert ax_lr.get_legend().get_bbox_to_anchor().y0 < ax_lr.get_window_extent().y0  # below
    assert ax_s.lines[1].get_label().startswith("$S_{min}")


def test_summary_marks_learning_rates_where_a_seed_diverged():
    fig = plot_sweep(_result())
    ax = fig.axes[0]
    marks = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(marks) == 1 and marks[0].get_label() == "diverged (a seed)"
    assert list(marks[0].get_xdata()) == [1.0]  # batch size 16, learning rate 1.0
    assert "diverged (a seed)" in [t.get_text() for t in ax.get_legend().get_texts()]
