"""Evaluation schedule and full-set evaluation of one run.

The schedule is declared in the sweep's budget unit (examples or steps) so that runs of
different batch sizes are evaluated at the same amounts of training: the nominal points are
shared by every batch size, and each maps to the optimizer step ``point // B`` (examples) or
``point`` (steps) — through the stages of a batch-size schedule, the step by which that many
examples were seen (``SweepConfig.steps_at``). Start and end of training are always evaluated.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd.config import SweepConfig


class EvalData(NamedTuple):
    """Fixed evaluation sets, on device, shared by every run (not vmapped).

    x_train/y_train: the first ``eval_train_examples`` training examples; x_test/y_test: the
    test set. Shapes [M, *input_shape] and [M] or [M, K].
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def _points(config: SweepConfig, every: int | None, log_points: int, points) -> set[int]:
    """Nominal points in ``config.budget_unit``: every ``every``, ``log_points`` log-spaced
    from one step of the smallest batch (examples) or one step, and ``points``."""
    out = {int(p) for p in points}
    if every is not None:
        out.update(range(0, config.budget + 1, every))
    if log_points:
        first = min(config.batch_sizes) if config.budget_unit == "examples" else 1
        out.update(np.unique(np.round(np.geomspace(first, config.budget, log_points)))
                   .astype(int).tolist())
    return out


def evaluation_points(config: SweepConfig) -> np.ndarray:
    """Nominal evaluation points [P] int64, in ``config.budget_unit``, sorted, from 0 to budget."""
    every, log_points = config.eval_every, config.eval_log_points
    if every is None and log_points == 0 and not config.eval_points:
        every = max(1, config.budget // 16)
    points = {0, config.budget} | _points(config, every, log_points, config.eval_points)
    return np.asarray(sorted(points), np.int64)


def evaluation_steps(config: SweepConfig, batch_size: int) -> np.ndarray:
    """Optimizer step [P] int64 at which each nominal point is evaluated for this batch size
    (``SweepConfig.steps_at``: through the stages of a batch-size schedule)."""
    return config.steps_at(batch_size, evaluation_points(config))


def snapshot_steps(config: SweepConfig, batch_size: int) -> np.ndarray:
    """Optimizer steps [S] int64 (sorted, distinct, in 0..num_steps) after which every run's
    state is kept at this batch size: the configured snapshot points, log-spaced points and (if
    asked) the evaluation points, each mapped to ``point // B`` (examples) or ``point``."""
    points = _points(config, None, config.snapshot_log_points, config.snapshot_points)
    steps = set(config.steps_at(batch_size, sorted(points)).tolist())
    if config.snapshot_evaluations:
        steps |= set(evaluation_steps(config, batch_size).tolist())
    return np.asarray(sorted(steps), np.int64)


def eval_slots(steps: np.ndarray, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step slot table for the scan and the slot of each nominal point.

    Returns (slot_of_step [num_steps] int32, -1 where no evaluation; point_slot [P] int32).
    Slots index the distinct evaluated steps in increasing order; the last slot is the final
    step ``num_steps`` (evaluated after the scan).
    """
    unique = np.unique(steps)
    slot_of_step = np.full((num_steps,), -1, np.int32)
    inside = unique < num_steps
    slot_of_step[unique[inside]] = np.arange(inside.sum(), dtype=np.int32)
    point_slot = np.searchsorted(unique, steps).astype(np.int32)
    return slot_of_step, point_slot


def evaluate(
    apply: Callable[[Any, jax.Array], jax.Array],
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]],
    params: Any,
    data: EvalData,
    slice_size: int | None = None,
) -> dict[str, jax.Array]:
    """Metrics of ``params`` on both evaluation sets: {"train_loss", "test_loss", ...} scalars.

    ``metrics`` returns means over examples. With ``slice_size``, each set is evaluated in
    slices of that many examples (``lax.map``, then the mean of the slice means weighted by
    slice size), so a vmapped sweep holds ``runs x slice_size`` activations at a time instead
    of ``runs x M``.
    """
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        for name, value in _sliced_metrics(apply, metrics, params, x, y, slice_size).items():
            out[f"{split}_{name}"] = jnp.asarray(value, jnp.float32)
    return out


def _sliced_metrics(apply, metrics, params, x, y, slice_size):
    n = x.shape[0]
    if slice_size is None or n <= slice_size:
        return metrics(apply(params, x), y)
    s = slice_size
    k = n // s
    head = (x[: k * s].reshape(k, s, *x.shape[1:]), y[: k * s].reshape(k, s, *y.shape[1:]))
    per_slice = jax.lax.map(lambda b: metrics(apply(params, b[0]), b[1]), head)
    totals = jax.tree.map(lambda v: jnp.sum(v, axis=0) * s, per_slice)
    if s * k < n:
        tail = metrics(apply(params, x[k * s:]), y[k * s:])
        totals = jax.tree.map(lambda t, v: t + v * (n - k * s), totals, tail)
    return jax.tree.map(lambda t: t / n, totals)
