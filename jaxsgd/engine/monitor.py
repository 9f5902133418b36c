"""The minibatch-loss monitor of a run: divergence that means the same at every batch size, and
loss spikes.

A minibatch loss ℓ_t is an average over B examples, so its noise grows as B shrinks: at B = 1
one confidently wrong (e.g. mislabelled) example costs 20+ nats while the run is healthy. A rule
on the single loss ℓ_t then freezes healthy small-batch runs. The monitor decides on a running
average over about ``horizon`` *examples* instead, the same amount of data at every B:

    d = exp(−B / horizon)                                  (static per batch size)
    a_t = d·a_{t−1} + (1 − d)·ℓ_t,   w_t = d·w_{t−1} + (1 − d),   s_t = a_t / w_t
                                                          (debiased EMA; a_{−1} = w_{−1} = 0)
    diverged at step t:   ℓ_t is not finite,  or  s_t > factor · L_0
    spike at step t ≥ 1:  ℓ_t > spike_factor · s_{t−1}

with L_0 the *reference*: the training loss at the initial parameters from the first
evaluation (over the evaluation's training examples, every example by default) — not the first
minibatch loss, which at B = 1 is one example's (on MNIST-1D these range over a factor of 3 at
initialisation), and not a running mean, which a loss growing from the first step would drag
along (never tripping the rule). For B ≫ horizon, d → 0 and the rule is the single-loss one,
ℓ_t > factor · L_0; at B = 1 and horizon = 256 one 23-nat example moves s_t by 0.09 nats, while
a loss that explodes (to 10⁴ nats, or inf) is caught at that step. Between evaluations the monitor keeps the largest minibatch loss and the number
of spikes (the evaluation records them as ``batch_loss_max`` and ``batch_loss_spikes`` and
starts a new interval).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp


class LossMonitor(NamedTuple):
    """Running state (float32 scalars; a leading [runs] axis when vmapped)."""

    average: jnp.ndarray  # a_t: the EMA before debiasing
    weight: jnp.ndarray  # w_t = 1 − d^(t+1): its debiasing weight (0 before the first step)
    reference: jnp.ndarray  # L_0, the initial training loss (NaN: unknown, only ℓ_t checked)
    peak: jnp.ndarray  # the largest minibatch loss in the current interval (NaN: none yet)
    spikes: jnp.ndarray  # spikes in the current interval


def init_monitor(reference=jnp.nan) -> LossMonitor:
    zero, nan = jnp.float32(0.0), jnp.float32(jnp.nan)
    return LossMonitor(zero, zero, jnp.asarray(reference, jnp.float32), nan, zero)


def decay(batch_size: int, horizon: float) -> float:
    """d = exp(−B/horizon): the EMA's weight of the past per step (static)."""
    return math.exp(-batch_size / horizon)



def smoothed(monitor: LossMonitor) -> jnp.ndarray:
    """s_t, the debiased running average (NaN before the first step)."""
    return jnp.where(monitor.weight > 0, monitor.average / monitor.weight, jnp.nan)


def observe(monitor: LossMonitor, loss, *, d: float, factor: float,
            spike_factor: float) -> tuple[LossMonitor, jnp.ndarray]:
    """Take minibatch loss ℓ_t: (the new state, whether the run diverges at this step);
    ``d`` = ``decay(B, horizon)``."""
    loss = jnp.asarray(loss, jnp.float32)
    before = smoothed(monitor)
    first = monitor.weight == 0
    average = d * monitor.average + (1 - d) * loss
    weight = d * monitor.weight + (1 - d)
    bad = ~jnp.isfinite(loss) | (average / weight > factor * monitor.reference)
    spike = ~first & (loss > spike_factor * before)
    peak = jnp.where(jnp.isnan(monitor.peak), loss, jnp.maximum(monitor.peak, loss))
    return monitor._replace(average=average, weight=weight, peak=peak,
                            spikes=monitor.spikes + spike.astype(jnp.float32)), bad


def new_interval(monitor: LossMonitor) -> LossMonitor:
    """The same running average, with the interval's peak and spike count cleared."""
    return monitor._replace(peak=jnp.full_like(monitor.peak, jnp.nan),
                            spikes=jnp.zeros_like(monitor.spikes))
