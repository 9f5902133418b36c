"""Steps-to-target: the first evaluation at which a run reaches a goal (Shallue et al. 2019).

A run reaches the target at the first evaluation step where the metric is <= the value (losses,
errors) or >= the value (accuracies). A run that never reaches it, or that diverged anywhere in
training, scores infinity (infeasible), so a minimum over learning rates picks feasible runs only.
"""

from __future__ import annotations

import numpy as np

from jaxsgd.config import TARGET_METRICS


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
    if direction not in ("min", "max"):
        raise ValueError(f"direction: {direction!r} is not 'min' or 'max'")
    metric = np.asarray(metric, np.float64)
    steps = np.broadcast_to(np.asarray(steps, np.float64), metric.shape)
    with np.errstate(invalid="ignore"):
        reached = metric <= value if direction == "min" else metric >= value
    first = np.argmax(reached, axis=-1)
    any_reached = reached.any(axis=-1)
    result = np.take_along_axis(steps, first[..., None], axis=-1)[..., 0]
    result = np.where(any_reached, result, np.inf)
    if diverged is not None:
        result = np.where(np.asarray(diverged, bool), np.inf, result)
    return result


def target_metric_values(evals: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """The named target metric from evaluation arrays; errors are 1 − accuracy."""
    if metric not in TARGET_METRICS:
        raise ValueError(f"target metric {metric!r}; known: {', '.join(TARGET_METRICS)}")
    if metric.endswith("_error"):
        accuracy = metric.replace("_error", "_accuracy")
        if accuracy not in evals:
            raise ValueError(f"target metric {metric!r} needs {accuracy!r}, which this task "
                             "does not record (regression has no accuracy)")
        return 1.0 - np.asarray(evals[accuracy])
    if metric not in evals:
        raise ValueError(f"target metric {metric!r} is not recorded by this task")
    return np.asarray(evals[metric])
