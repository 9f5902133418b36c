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
norm, ``jaxsgd.measure.per_example``) comes fused into that backward pass when no parameter
needs ``vmap(grad)``, and is ``None`` otherwise (the probe then computes what it needs itself,
only when due). ``example_leaves`` (a regular expression on the leaf paths) limits the norms
the step computes to the leaves it matches (the others are NaN), unless another probe needs all.
``options`` (pairs of name and JSON value: number, string, bool, None, or a list of them) enter
the sweep's provenance, so resuming with other settings is refused; ``checked_probes`` checks
them before anything compiles and makes lists tuples (hashable, as compiled programs need).
The noise-scale probes live in ``jaxsgd.probes.noise``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
import optax

from jaxsgd._util import check_int

PyTree = Any


class Probe(NamedTuple):
    name: str
    every: int
    init: Callable[[PyTree, jax.Array], PyTree]
    measure: Callable[..., tuple[PyTree, dict[str, jax.Array]]]
    step_gradients: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # (name, JSON-able value) pairs; hashable
    example_leaves: str | None = None  # step_gradients: whose per-example norms (regex; all)


def _frozen(where: str, value: Any) -> Any:
    """A JSON value with lists as tuples (NumPy scalars as Python ones); ``ValueError`` naming
    ``where`` for anything else."""
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(f"{where}[{i}]", v) for i, v in enumerate(value))
    raise ValueError(f"{where}: {value!r} is not a JSON value (a number, string, bool, None or "
                     f"a list of them)")


def checked_probes(probes: Sequence[Probe]) -> tuple[Probe, ...]:
    """The probes of a sweep, checked before anything compiles: each a ``Probe`` with a
    distinct non-empty name, ``every`` a positive integer, options (name, JSON value) pairs;
    lists in the options become tuples. A one-line ``ValueError`` names the bad probe and value.
    """
    out, names = [], set()
    for i, probe in enumerate(probes):
        if not isinstance(probe, Probe):
            raise ValueError(f"probes[{i}]: {probe!r} is not a Probe")
        if not isinstance(probe.name, str) or not probe.name:
            raise ValueError(f"probes[{i}]: name {probe.name!r} is not a non-empty string")
        if probe.name in names:
            raise ValueError(f"probes: two probes are named {probe.name!r}; give one a name=")
        names.add(probe.name)
        check_int(f"probe {probe.name!r}: every", probe.every, unit="optimizer steps")
        options = probe.options.items() if isinstance(probe.options, dict) else probe.options
        pairs = []
        for pair in options:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and isinstance(pair[0], str)):
                raise ValueError(f"probe {probe.name!r}: options must be (name, value) pairs, "
                                 f"got {pair!r}")
            pairs.append((pair[0], _frozen(f"probe {probe.name!r}: option {pair[0]!r}",
                                           pair[1])))
        out.append(probe._replace(options=tuple(pairs)))
    return tuple(out)


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
