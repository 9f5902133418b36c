"""Targets: the one home of "has a run reached its goal, and when" (Shallue et al. 2019).

A target is a metric and a value. ``TARGET_METRICS`` names the metrics and their direction: a
loss or an error is reached when metric <= value ("min"), an accuracy when metric >= value
("max"). Errors are 1 − accuracy, computed from the recorded accuracies (``metric_values``).

* ``target_reached`` — the comparison itself, on NumPy or JAX arrays (the engine's in-scan
  stop check, ``SweepConfig.stop_at_target``, uses it on each evaluation);
* ``steps_to_target`` — the first evaluation step at which a run reaches the target. A run
  that never reaches it, or that diverged anywhere in training, scores infinity (infeasible),
  so a minimum over learning rates picks feasible runs only; examples to target are
  ``steps × batch size``;
* ``sweep_steps_to_target`` — the same for every run of a finished sweep and *any* target,
  recomputed from the stored evaluation curves.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

TARGET_METRICS = {
    "train_loss": "min",
    "test_loss": "min",
    "train_error": "min",
    "test_error": "min",
    "train_accuracy": "max",
    "test_accuracy": "max",
}
CURVES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")  # recorded metrics


def target_direction(metric: str) -> str:
    """"min" or "max" for a target metric name; ``ValueError`` naming the known ones."""
    if metric not in TARGET_METRICS:
        raise ValueError(f"target metric {metric!r}; known: {', '.join(TARGET_METRICS)}")
    return TARGET_METRICS[metric]


def metric_values(evals: Mapping[str, Any], metric: str) -> Any:
    """The named target metric from recorded evaluations (NumPy or JAX arrays, same shapes);
    errors are 1 − accuracy."""
    target_direction(metric)
    if metric.endswith("_error"):
        accuracy = metric.replace("_error", "_accuracy")
        if accuracy not in evals:
            raise ValueError(f"target metric {metric!r} needs {accuracy!r}, which this task "
                             "does not record (regression has no accuracy)")
        return 1.0 - evals[accuracy]
    if metric not in evals:
        raise ValueError(f"target metric {metric!r} is not recorded by this task")
    return evals[metric]


def target_reached(values: Any, value: float, direction: str) -> Any:
    """Whether ``values`` reach the target ``value`` (NumPy or JAX; NaN is never reached)."""
    if direction not in ("min", "max"):
        raise ValueError(f"direction: {direction!r} is not 'min' or 'max'")
    return values <= value if direction == "min" else values >= value


def steps_to_target(
    metric: np.ndarray,
    steps: np.ndarray,
    value: float,
    direction: str = "min",
    diverged: np.ndarray | None = None,
) -> np.ndarray:
    """First step at which ``metric`` reaches ``value``; inf if never or diverged.

    Args:
      metric: [..., P] metric at each evaluation (NaN counts as not reached).
      steps: [P] or [..., P] optimizer step of each evaluation, non-decreasing along the last axis.
      value: the target.
      direction: "min" (reached when metric <= value) or "max" (metric >= value).
      diverged: optional [...] bool; diverged runs score inf.

    Returns:
      [...] float64 steps (inf where not reached).
    """
    metric = np.asarray(metric, np.float64)
    steps = np.broadcast_to(np.asarray(steps, np.float64), metric.shape)
    with np.errstate(invalid="ignore"):
        reached = target_reached(metric, value, direction)
    first = np.argmax(reached, axis=-1)
    result = np.take_along_axis(steps, first[..., None], axis=-1)[..., 0]
    result = np.where(reached.any(axis=-1), result, np.inf)
    if diverged is not None:
        result = np.where(np.asarray(diverged, bool), np.inf, result)
    return result


def sweep_steps_to_target(result: Any, target: float | None = None,
                          metric: str | None = None) -> Any:
    """Steps to ``target`` of every run of a sweep: [batch_size, *grid dims] (inf: never/diverged).

    ``result`` is a ``SweepResult``. With ``target=None`` the stored ``steps_to_target`` (the
    sweep's own target). Otherwise it is recomputed from the stored evaluation curves for
    ``metric`` (default: the sweep's target metric) reaching ``target``, so any target works,
    not only the one the sweep ran with. The returned DataArray's attrs name the target.
    """
    metrics, config = result.metrics, result.config
    if target is None:
        if metric is not None:
            raise ValueError(f"metric={metric!r} given without a target value; pass target=")
        if "steps_to_target" not in metrics:
            raise ValueError("this sweep has no target: pass target= (a value) and metric= "
                             f"(one of {', '.join(TARGET_METRICS)})")
        return metrics["steps_to_target"].astype(np.float64).assign_attrs(
            metric=config.target_metric, value=config.target_value)
    metric = metric if metric is not None else config.target_metric
    if metric is None:
        raise ValueError(f"target={target!r} given, but the sweep has no target metric: pass "
                         f"metric= (one of {', '.join(TARGET_METRICS)})")
    try:
        value = float(target)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(target, (bool, str)) or not math.isfinite(value):
        raise ValueError(f"target: {target!r} is not a finite number")
    edim = config.eval_dim
    names = [n for n in CURVES if n in metrics]
    template = metrics[names[0]].transpose(..., edim)
    dims = template.dims[:-1]
    values = metric_values({n: metrics[n].transpose(*template.dims).values for n in names},
                           metric)
    steps = metrics["step"].broadcast_like(template).transpose(*template.dims).values
    diverged = metrics["diverged"].transpose(*dims)
    found = steps_to_target(values, steps, value, target_direction(metric), diverged.values)
    return diverged.copy(data=found).rename("steps_to_target").assign_attrs(
        metric=metric, value=value)
