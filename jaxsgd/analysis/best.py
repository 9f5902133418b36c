"""The best grid point per batch size: one rule, used by ``summarize``, ``critical_batch_size``,
the figures and the experiments.

For each batch size the best point is chosen over every swept grid dimension except ``seed``
(the *search dims*: learning rate, and momentum, weight decay, … when swept). Each point is
scored from its seeds, then points are ordered by

1. **steps to target** (when there is a target), combined over seeds by ``seeds``:
   * ``"mean"`` (default): the mean over seeds; a point where any seed is infeasible (never
     reached the target, or diverged: inf) is infeasible (Shallue et al. 2019);
   * ``"median"``: the median over seeds, infeasible seeds counting as never reaching the
     target (inf), so a point is infeasible only if at least half of its seeds are;
2. then the **final metric** (test accuracy, higher is better; test loss for regression), mean
   over seeds; a point where any seed diverged has no mean (NaN) and ranks last on it;
3. then **grid order** (the first point: the smallest learning rate, …).

Grid points that were not run are NaN in every variable (seeds that were not run likewise):
they are never chosen, and the seeds of a point that were not run are left out of its score.
A batch size has no best point (index −1) when no point was run, or when the best point has
neither a finite score nor a finite final metric (every run diverged).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from jaxsgd.engine.results import grid_dims

SEED_RULES = ("mean", "median")


class Choice(NamedTuple):
    """The best point of each batch size: ``index`` [B] flat index into the search dims (−1:
    none), ``score`` [B] its combined steps to target (inf: infeasible; 0 without a target),
    ``scores`` [B, P] the combined steps of every point (NaN: not run)."""

    index: np.ndarray
    score: np.ndarray
    scores: np.ndarray


def check_seed_rule(seeds: str) -> str:
    if seeds not in SEED_RULES:
        raise ValueError(f"seeds: {seeds!r} is not one of {', '.join(SEED_RULES)}")
    return seeds


def combine_seeds(steps: np.ndarray, seeds: str = "mean") -> np.ndarray:
    """Steps to target [..., S] combined over the last (seed) axis by the rule ``seeds``.

    inf: infeasible seeds; NaN: seeds not run, left out (all NaN: NaN, a point not run).
    """
    combine = {"mean": np.nanmean, "median": np.nanmedian}[check_seed_rule(seeds)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice: a point not run
        return combine(np.asarray(steps, np.float64), axis=-1)


def _final_mean(final: np.ndarray, seed_ran: np.ndarray) -> np.ndarray:
    """Mean over the seeds that ran; NaN where one of them has no final metric (diverged)."""
    diverged = np.any(seed_ran & np.isnan(final), axis=-1)
    total = np.where(seed_ran, final, 0.0).sum(-1)
    return np.where(diverged, np.nan, total / np.maximum(seed_ran.sum(-1), 1))


def choose(steps: np.ndarray | None, final: np.ndarray | None = None, *,
           higher_is_better: bool = True, seeds: str = "mean") -> Choice:
    """The rule of the module docstring on arrays.

    Args:
      steps: [B, P, S] steps to target (inf infeasible, NaN not run), or None without a target.
      final: [B, P, S] final metric (NaN: diverged or not run), or None.
      higher_is_better: direction of ``final``.
      seeds: "mean" or "median".
    At least one of ``steps`` and ``final`` is given; P indexes the search dims in C order.
    """
    if steps is None and final is None:
        raise ValueError("choose: give steps to target, a final metric, or both")
    if steps is not None:
        steps = np.asarray(steps, np.float64)
        score = combine_seeds(steps, seeds)  # [B, P]
        seed_ran = ~np.isnan(steps)
    else:
        final = np.asarray(final, np.float64)
        score = np.zeros(final.shape[:2])
        seed_ran = np.broadcast_to(~np.all(np.isnan(final), axis=-1, keepdims=True), final.shape)
    ran = seed_ran.any(axis=-1)  # [B, P]: the point was run
    secondary = np.zeros_like(score)
    if final is not None:
        mean = _final_mean(np.asarray(final, np.float64), seed_ran)
        secondary = -mean if higher_is_better else mean
    # NaN ranks last on either key; a point not run is not a candidate at all
    primary = np.where(np.isnan(score), np.inf, score)
    secondary = np.where(np.isnan(secondary), np.inf, secondary)
    index, best = np.full(len(score), -1), np.full(len(score), np.nan)
    for b in range(len(score)):
        candidates = np.flatnonzero(ran[b])
        if candidates.size == 0:
            continue
        first = candidates[np.lexsort((candidates, secondary[b, candidates],
                                       primary[b, candidates]))[0]]
        if (steps is not None and np.isfinite(score[b, first])) or np.isfinite(
                secondary[b, first]):
            index[b], best[b] = first, score[b, first]
    return Choice(index, best, score)


def search_dims(result: Any) -> list[str]:
    """Grid dimensions the best point is chosen over: every result grid dim except seed."""
    return [d for d in grid_dims(result.config) if d != "seed"]


def final_metric_name(result: Any) -> str:
    """"test_accuracy" for classification, "test_loss" for regression (no accuracy recorded)."""
    return "test_accuracy" if "test_accuracy" in result.metrics else "test_loss"


def final_metric(result: Any) -> xr.DataArray:
    """The final test metric of every run: [batch_size, *grid dims] (NaN if it diverged)."""
    metric = result.metrics[final_metric_name(result)]
    return metric.isel({result.config.eval_dim: -1}, drop=True)


def _as_array(values: xr.DataArray, dims: list[str]) -> np.ndarray:
    """[batch_size, *dims, seed] -> [B, P, S] float64."""
    values = values.transpose("batch_size", *dims, "seed")
    return values.values.astype(np.float64).reshape(values.sizes["batch_size"], -1,
                                                    values.sizes["seed"])


def best_points(result: Any, steps: xr.DataArray | None = None, *,
                seeds: str = "mean") -> xr.Dataset:
    """The best grid point of each batch size of a sweep (module docstring).

    Args:
      result: a ``SweepResult``.
      steps: steps to target [batch_size, *grid dims] (default: the sweep's stored
        ``steps_to_target``, if it has a target; see ``jaxsgd.sweep_steps_to_target`` for any
        other target).
      seeds: "mean" or "median" (how seeds combine).

    Returns:
      [batch_size] variables: ``index`` (flat index into the search dims, −1: none), ``steps``
      (the combined steps at the best point; inf infeasible, NaN none), and the best value of
      each search dim (NaN: none).
    """
    dims = search_dims(result)
    if steps is None and "steps_to_target" in result.metrics:
        steps = result.metrics["steps_to_target"]
    final = final_metric(result)
    choice = choose(None if steps is None else _as_array(steps, dims), _as_array(final, dims),
                    higher_is_better=final_metric_name(result) == "test_accuracy", seeds=seeds)
    shape = [final.sizes[d] for d in dims]
    out = {"index": ("batch_size", choice.index),
           "steps": ("batch_size", choice.score if steps is not None
                     else np.full(len(choice.index), np.nan))}
    position = np.unravel_index(np.maximum(choice.index, 0), shape)
    for d, j in zip(dims, position):
        values = result.metrics[d].values.astype(np.float64)[j]
        out[d] = ("batch_size", np.where(choice.index >= 0, values, np.nan))
    return xr.Dataset(out, coords={"batch_size": final["batch_size"].values})
