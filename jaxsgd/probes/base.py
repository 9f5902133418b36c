"""Probes: measurements taken inside the training scan every ``every`` steps.

A probe is a pair of pure functions (optax style) plus a name and an interval:

* ``init(params, key) -> state`` — the probe's own carry (any pytree; ``()`` if none);
* ``measure(loss_fn, params, opt_state, batch, key, step, state) -> (state, outputs)`` — runs at
  optimizer steps 0, every, 2·every, … before that step's update, on that step's minibatch
  ``batch = (x [B, ...], y [B, ...])``. ``outputs`` is a flat dict of fixed-shape arrays.

The engine runs ``measure`` under a ``lax.cond`` on the unbatched step counter, so when vmapped
over runs it is a real branch, taken once every ``every`` steps, not a select computed every step.
Outputs land in the results as variables ``{name}_{key}`` over a ``{name}_step`` dimension.

A probe built with ``step_gradients=True`` also receives the training step's own gradient as
``measure(..., state, gradients=StepGradients(loss, grads, example_sq_norms))``, so it costs
no extra backward pass; ``example_sq_norms`` (each leaf [B]: every example's squared gradient
norm, ``jaxsgd.measure.per_example``) comes fused into that backward pass when the model's layers allow
it, and is ``None`` otherwise (the probe then computes what it needs itself, only when due).
``options`` (pairs of name and JSON-able value) enter the sweep's fingerprint, so resuming with other settings is refused.
The noise-scale probes live in ``jaxsgd.probes.noise``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax

PyTree = Any


class Probe(NamedTuple):
    name: str
    every: int
    init: Callable[[PyTree, jax.Array], PyTree]
    measure: Callable[..., tuple[PyTree, dict[str, jax.Array]]]
    step_gradients: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # (name, JSON-able value) pairs; hashable


class StepGradients(NamedTuple):
    """What the training step computed on its minibatch, handed to ``step_gradients`` probes.

    loss: [] mean minibatch loss; grads: its gradient (like params); example_sq_norms: every
    example's squared gradient norm per leaf (like params, each leaf [B]) when fused, else None;
    num_train: the training-set size N when minibatches are drawn without replacement (epoch
    sampling: the finite-data correction applies), None when drawn with replacement.
    """

    loss: jax.Array
    grads: PyTree
    example_sq_norms: PyTree | None
    num_train: int | None = None


def num_probe_points(num_steps: int, every: int) -> int:
    """Number of probe measurements in a run of ``num_steps`` steps (steps 0, every, …)."""
    return -(-num_steps // every)


def gradient_norm(every: int = 1) -> Probe:
    """Minibatch gradient norm |g_B| and parameter norm |θ| (Euclidean, over all leaves).

    Outputs: ``grad_norm`` and ``param_norm``, float32 scalars per measurement.
    """

    def measure(loss_fn, params, opt_state, batch, key, step, state):
        grads = jax.grad(loss_fn)(params, batch)
        out = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
        return state, out

    return Probe(name="gradient_norm", every=every, init=lambda params, key: (), measure=measure)
