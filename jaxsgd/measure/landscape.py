"""Loss landscapes: 1-D interpolation between two solutions, filter-normalised 1-D and 2-D slices.

    interpolate(fn, θ_a, θ_b, batch, alphas)        f((1 − α)θ_a + αθ_b)          [A]
    loss_surface_1d(fn, θ, d, batch, alphas)         f(θ + αd)                     [A]
    loss_surface_2d(fn, θ, d₁, d₂, batch, α, β)      f(θ + α_i d₁ + β_j d₂)        [A, B]
    filter_normalized_direction(θ, key=key)          Gaussian d, each filter rescaled to θ's
    filter_normalize(d, θ)                           the same rescaling of a given direction
    plot_interpolation, plot_surface_2d              figures in the shared style

Interpolation (Goodfellow et al. 2015, "Qualitatively characterizing neural network optimization
problems"; Keskar et al. 2017, "On large-batch training ... sharp minima") evaluates the loss on
the line through two solutions, typically for α ∈ [−1, 2], e.g. θ_a from a small-batch run and
θ_b from a large-batch run. α = 0 gives exactly θ_a and α = 1 exactly θ_b.

Filter normalisation (Li et al. 2018, "Visualizing the loss landscape of neural nets"): a
random direction d ~ N(0, I) shaped like θ, then for every filter j

    d_j ← d_j · ‖θ_j‖ / ‖d_j‖        (Frobenius norms; d_j ← 0 where ‖d_j‖ = 0)

A *filter* is a slice of a kernel along its last (output) axis, flax's layout: a dense kernel
[in, out] has one filter per output unit (a column, [in]); a conv kernel [kh, kw, in, out] (or
[k, in, out] in 1-D) one per output channel ([kh, kw, in]). Leaves with ndim <= 1 (biases,
norm-layer scales and offsets) and any leaf named "bias" or "scale" (flax's names for the
parameters of Dense/Conv biases and of LayerNorm/BatchNorm/GroupNorm) are zeroed: the slice then
moves only the weights. Since d scales with θ filter by filter, slices through θ and through a
ReLU-rescaled θ' = (cW₁, cb₁, W₂/c, b₂) — the same function (Dinh et al. 2017) — coincide when
drawn with the same key, which is what makes sharpness read off these plots comparable between
networks; an un-normalised direction gives different curves.

Metrics: ``fn(params, batch)`` may return a scalar loss or any pytree of scalars (a dict such as
``{"loss": ..., "accuracy": ...}``); the result is the same pytree with a leading grid axis [A]
(or [A, B]). ``batch`` is passed through unchanged, so it may hold several data sets, e.g.
``{"train": (x, y), "test": (x, y)}`` with an ``fn`` returning ``{"train": {...}, "test": {...}}``.

Every grid is evaluated as one vmapped call of ``fn`` over the grid points (the 2-D grid
flattened to A·B points), or with ``chunk_size=k`` as ``lax.map`` over chunks of k points,
vmapped within a chunk, so memory holds k copies of params and activations instead of A·B. All
functions are pure and work under ``jax.jit`` (``fn`` and ``chunk_size`` static) and ``jax.vmap``
over a leading runs axis of the params and directions. Cost: one forward pass on ``batch`` per
grid point.

Example (train and test loss along the line from a small-batch to a large-batch solution):
    >>> metrics = lambda p, b: classification_metrics(model.apply(p, b[0]), b[1])  # doctest: +SKIP
    >>> alphas = jnp.linspace(-1.0, 2.0, 31)                                      # doctest: +SKIP
    >>> train = interpolate(metrics, small, large, (x_train, y_train), alphas)    # doctest: +SKIP
    >>> test = interpolate(metrics, small, large, (x_test, y_test), alphas)       # doctest: +SKIP
    >>> fig = plot_interpolation(alphas, {"train": train, "test": test})          # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from jaxsgd._util import check_int
from jaxsgd.style import COLUMN_WIDTH, figure, plain_log_labels, save_figure, use_style

PyTree = Any
MetricFn = Callable[[PyTree, PyTree], PyTree]  # fn(params, batch) -> scalar or pytree of scalars

NORM_LAYER_NAMES = ("bias", "scale")  # leaf names zeroed by filter normalisation


# --------------------------------------------------------------------------------- validation


def _check_same_shapes(reference: PyTree, other: PyTree, ref_name: str, name: str) -> None:
    """ValueError naming the first leaf where ``other`` differs from ``reference`` in shape."""
    ref_def, other_def = jax.tree.structure(reference), jax.tree.structure(other)
    if ref_def != other_def:
        ref_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
            reference)}
        other_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
            other)}
        missing, extra = sorted(ref_paths - other_paths), sorted(other_paths - ref_paths)
        detail = (f"{name} lacks {missing[0]}" if missing else
                  f"{name} has {extra[0]}, not in {ref_name}" if extra else
                  f"{ref_def} vs {other_def}")
        raise ValueError(f"{name} must have the tree structure of {ref_name}: {detail}")
    ref_leaves = jax.tree_util.tree_leaves_with_path(reference)
    for (path, a), b in zip(ref_leaves, jax.tree.leaves(other)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(b)}, "
                             f"but {ref_name}{jax.tree_util.keystr(path)} has {jnp.shape(a)}")


def _grid(values, name: str) -> jax.Array:
    """A non-empty 1-D float array of grid coordinates."""
    if isinstance(values, (int, float)):
        raise ValueError(f"{name} must be a 1-D sequence of grid points, got the scalar {values}")
    grid = jnp.asarray(values)
    if grid.ndim != 1 or grid.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of grid points, got shape "
                         f"{grid.shape}")
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        grid = grid.astype(jnp.result_type(float))
    return grid


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, unit="grid points, or None")


def _check_params(params: PyTree, name: str) -> None:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} must be floating point, got "
                             f"dtype {jnp.result_type(leaf)}")


# --------------------------------------------------------------------------- grid evaluation


def _over_grid(point_fn: Callable[[jax.Array], PyTree], points: jax.Array,
               chunk_size: int | None) -> PyTree:
    """point_fn at every row of ``points`` [N, ...]: one vmap, or lax.map over chunks of k."""
    if chunk_size is None or chunk_size >= points.shape[0]:
        return jax.vmap(point_fn)(points)
    return jax.lax.map(point_fn, points, batch_size=chunk_size)


def _axpy(params: PyTree, coefficient: jax.Array, direction: PyTree) -> PyTree:
    """θ + c·d leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda p, d: (p + coefficient.astype(p.dtype) * d).astype(p.dtype),
                        params, direction)


def interpolate(fn: MetricFn, params_a: PyTree, params_b: PyTree, batch: PyTree, alphas,
                *, chunk_size: int | None = None) -> PyTree:
    """fn((1 − α)θ_a + αθ_b, batch) for every α in ``alphas`` (Goodfellow et al. 2015).

    Args:
      fn: ``fn(params, batch)`` → a scalar loss, or a pytree of scalars (e.g. loss and accuracy).
      params_a, params_b: the two endpoints, same tree structure and leaf shapes.
      batch: passed to ``fn`` unchanged (any pytree: one batch, or several data sets).
      alphas: grid [A], typically ``linspace(-1, 2, A)``; α = 0 is θ_a, α = 1 is θ_b exactly.
      chunk_size: evaluate k grid points at a time (``lax.map``) to bound memory; None: all A.

    Returns:
      The output of ``fn`` with a leading grid axis: an array [A], or a pytree of arrays [A].
    """
    _check_params(params_a, "params_a")
    _check_same_shapes(params_a, params_b, "params_a", "params_b")
    alphas = _grid(alphas, "alphas")
    _check_chunk_size(chunk_size)

    def at(alpha):
        mixed = jax.tree.map(
            lambda a, b: ((1 - alpha.astype(a.dtype)) * a + alpha.astype(a.dtype) * b
                          ).astype(a.dtype), params_a, params_b)
        return fn(mixed, batch)

    return _over_grid(at, alphas, chunk_size)


def loss_surface_1d(fn: MetricFn, params: PyTree, direction: PyTree, batch: PyTree, alphas,
                    *, chunk_size: int | None = None) -> PyTree:
    """fn(θ + α d, batch) for every α in ``alphas``: a 1-D slice of the landscape [A].

    ``direction`` has the tree structure and leaf shapes of ``params`` (usually
    ``filter_normalized_direction(params, key=key)``). Other arguments and the result as in
    ``interpolate``.
    """
    _check_params(params, "params")
    _check_same_shapes(params, direction, "params", "direction")
    alphas = _grid(alphas, "alphas")
    _check_chunk_size(chunk_size)
    return _over_grid(lambda a: fn(_axpy(params, a, direction), batch), alphas, chunk_size)


def loss_surface_2d(fn: MetricFn, params: PyTree, direction1: PyTree, direction2: PyTree,
                    batch: PyTree, alphas, betas, *, chunk_size: int | None = None) -> PyTree:
    """fn(θ + α_i d₁ + β_j d₂, batch) on the grid alphas [A] × betas [B]: values[i, j] [A, B].

    The A·B points are flattened (α major) and evaluated as one vmapped call, or in chunks of
    ``chunk_size`` points. Row i is α_i (along d₁), column j is β_j (along d₂); ``fn`` may
    return a pytree of scalars, giving a pytree of [A, B] arrays.
    """
    _check_params(params, "params")
    _check_same_shapes(params, direction1, "params", "direction1")
    _check_same_shapes(params, direction2, "params", "direction2")
    alphas, betas = _grid(alphas, "alphas"), _grid(betas, "betas")
    _check_chunk_size(chunk_size)
    num_a, num_b = alphas.shape[0], betas.shape[0]
    dtype = jnp.result_type(alphas, betas)
    points = jnp.stack([jnp.repeat(alphas.astype(dtype), num_b),
                        jnp.tile(betas.astype(dtype), num_a)], axis=1)  # [A·B, 2]

    def at(point):
        return fn(_axpy(_axpy(params, point[0], direction1), point[1], direction2), batch)

    flat = _over_grid(at, points, chunk_size)
    return jax.tree.map(lambda v: v.reshape(num_a, num_b, *v.shape[1:]), flat)


# ----------------------------------------------------------------------- filter normalisation


def _is_zeroed(path, leaf) -> bool:
    """Biases and normalisation parameters: ndim <= 1, or a leaf named "bias" / "scale"."""
    last = path[-1] if path else None
    name = getattr(last, "key", getattr(last, "name", None))
    return jnp.ndim(leaf) <= 1 or name in NORM_LAYER_NAMES


def filter_normalize(direction: PyTree, params: PyTree) -> PyTree:
    """Rescale each filter of ``direction`` to the norm of the matching filter of ``params``.

    Filters are slices along the last axis (see the module docstring); biases and
    normalisation parameters are zeroed. Returns a pytree shaped like ``params`` in
    ``params``' dtypes.
    """
    _check_params(params, "params")
    _check_same_shapes(params, direction, "params", "direction")

    def rescale(path, p, d):
        d = jnp.asarray(d, p.dtype)
        if _is_zeroed(path, p):
            return jnp.zeros_like(p)
        axes = tuple(range(p.ndim - 1))  # all but the output axis: one norm per filter
        p_norm = jnp.sqrt(jnp.sum(jnp.square(p), axis=axes, keepdims=True))
        d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        safe = jnp.where(d_norm > 0, d_norm, 1)
        return jnp.where(d_norm > 0, d * (p_norm / safe), 0).astype(p.dtype)

    return jax.tree_util.tree_map_with_path(rescale, params, direction)


def filter_normalized_direction(params: PyTree, *, key: jax.Array) -> PyTree:
    """A random filter-normalised direction for ``params`` (Li et al. 2018).

    d ~ N(0, I) as one draw of the flattened params (``ravel_pytree`` order; one random
    program compiles ~3x faster than one per leaf), then ``filter_normalize``: every filter of
    d has the norm of θ's filter, biases and norm-layer parameters are 0.

    Args:
      params: θ, any pytree of floating arrays (flax layout: kernels [..., out]).
      key: a PRNG key; the same key and tree structure give the same Gaussian draw, so the
        direction for a rescaled θ' is the correspondingly rescaled direction.

    Returns:
      A pytree with the structure, shapes and dtypes of ``params``.
    """
    _check_params(params, "params")
    flat, unravel = ravel_pytree(params)
    gaussian = unravel(jax.random.normal(key, flat.shape, flat.dtype))
    return filter_normalize(gaussian, params)


# ------------------------------------------------------------------------------------ figures


def _named_curves(curves, labels: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
    """(label, values [A]) pairs from an array [A] or [K, A], a sequence, or a (nested) dict."""
    if isinstance(curves, Mapping):
        pairs = []
        for name, value in curves.items():
            if isinstance(value, Mapping):  # {"train": {"loss": ..}} -> "train loss"
                pairs += [(f"{name} {inner}", v) for inner, v in value.items()]
            else:
                pairs.append((str(name), value))
    else:
        values = np.asarray(curves) if not isinstance(curves, (list, tuple)) else curves
        if isinstance(values, np.ndarray) and values.ndim == 1:
            values = [values]
        pairs = [(f"curve {k}", v) for k, v in enumerate(values)]
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(pairs):
            raise ValueError(f"labels has {len(labels)} entries for {len(pairs)} curves")
        pairs = [(label, v) for label, (_, v) in zip(labels, pairs)]
    return [(name, np.asarray(v, np.float64)) for name, v in pairs]


def _figure(ax: Axes | None, height: float = 2.4) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax
    fig = figure(figsize=(COLUMN_WIDTH, height), layout="constrained")
    return fig, fig.subplots()


def plot_interpolation(alphas, curves, ax: Axes | None = None,
                       labels: Sequence[str] | None = None, *,
                       endpoints: tuple[str, str] = (r"$\theta_a$", r"$\theta_b$"),
                       path: str | os.PathLike | None = None) -> Figure:
    """Metrics along α (e.g. train and test loss and accuracy), with θ_a and θ_b marked.

    Args:
      alphas: the grid [A].
      curves: an array [A] or [K, A], a list of [A] arrays, or a dict name → [A]; a nested dict
        (``{"train": interpolate(...), "test": interpolate(...)}``) is flattened to "train
        loss", "test accuracy", ...
      ax: draw into this Axes (otherwise a new column-width Figure).
      labels: one legend label per curve, overriding the names.
      endpoints: names written at α = 0 and α = 1.
      path: also save as ``path.pdf`` and ``path.png``.

    Curves whose label contains "accuracy" are dashed on a second y axis on the right; the
    others share the left axis, logarithmic when positive and spanning more than a decade.
    The left Axes holds one line per loss curve plus the two dotted endpoint markers.

    Returns:
      The Figure (``fig.axes``: the left Axes, and the right one if there are accuracy curves).
    """
    alphas = np.asarray(alphas, np.float64)
    pairs = _named_curves(curves, labels)
    for name, values in pairs:
        if values.shape != alphas.shape:
            raise ValueError(f"curve {name!r} has shape {values.shape}, but alphas has "
                             f"{alphas.shape}")
    losses = [(n, v) for n, v in pairs if "accuracy" not in n.lower()]
    accuracies = [(n, v) for n, v in pairs if "accuracy" in n.lower()]
    with use_style():
        fig, ax = _figure(ax)
        handles = []
        for k, (name, values) in enumerate(losses):
            handles += ax.plot(alphas, values, "-", color=f"C{k}", label=name)
        if losses:
            stacked = np.concatenate([v for _, v in losses])
            finite = stacked[np.isfinite(stacked)]
            if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
                ax.set_yscale("log")
                plain_log_labels(ax.yaxis)
            ax.set_ylabel("loss")
        if accuracies:
            right = ax.twinx() if losses else ax
            for k, (name, values) in enumerate(accuracies):
                handles += right.plot(alphas, values, "--", color=f"C{k}", label=name)
            right.set_ylabel("accuracy")
            if losses:
                right.spines["right"].set_visible(True)
        for alpha, name in zip((0.0, 1.0), endpoints):
            ax.axvline(alpha, color="0.5", linestyle=":", linewidth=0.8)
            ax.annotate(name, (alpha, 1.0), xycoords=("data", "axes fraction"), ha="center",
                        va="bottom", fontsize=7)
        ax.set_xlabel(r"$\alpha$ in $(1-\alpha)\theta_a + \alpha\theta_b$")
        ax.legend(handles=handles)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_surface_2d(alphas, betas, values, ax: Axes | None = None, *, levels: int | Sequence = 20,
                    log: bool = False, filled: bool = False,
                    labels: tuple[str, str] = (r"$\alpha$ (along $d_1$)", r"$\beta$ (along $d_2$)"),
                    colorbar: str | None = "loss",
                    path: str | os.PathLike | None = None) -> Figure:
    """Contour plot of a 2-D slice values[i, j] = f(θ + α_i d₁ + β_j d₂), θ marked at (0, 0).

    Args:
      alphas [A], betas [B], values [A, B]: as from ``loss_surface_2d`` (α on the x axis).
      ax: draw into this Axes (otherwise a new square-ish column-width Figure).
      levels: number of contour levels or their values.
      log: space an integer number of levels geometrically (for a positive loss that spans
        decades).
      filled: ``contourf`` instead of contour lines.
      labels: x and y axis labels.
      colorbar: colorbar label, or None for no colorbar.
      path: also save as ``path.pdf`` and ``path.png``.

    Returns:
      The Figure; the ContourSet is the Axes' first collection.
    """
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    values = np.asarray(values, np.float64)
    if values.shape != (alphas.size, betas.size):
        raise ValueError(f"values has shape {values.shape}, expected (len(alphas), len(betas)) "
                         f"= {(alphas.size, betas.size)}")
    if log and isinstance(levels, int):
        finite = values[np.isfinite(values)]
        if not finite.size or finite.min() <= 0:
            raise ValueError("log=True needs positive values")
        levels = np.geomspace(finite.min(), finite.max(), levels)
    with use_style():
        fig, ax = _figure(ax, height=COLUMN_WIDTH * 0.8)
        draw = ax.contourf if filled else ax.contour
        contours = draw(alphas, betas, values.T, levels=levels, cmap="viridis")  # Z is [y, x]
        ax.plot([0.0], [0.0], "k+", markersize=6)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        if colorbar is not None:
            fig.colorbar(contours, ax=ax, label=colorbar)
    if path is not None:
        save_figure(fig, path)
    return fig
