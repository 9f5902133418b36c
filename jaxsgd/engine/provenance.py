"""Provenance: what determines a sweep's runs, recorded with its results and checked wherever
they are resumed or rebuilt.

``provenance(parts, probes)`` describes a sweep in two parts kept apart:

* ``run`` — what determines every run: the configuration without its grid and batch sizes,
  the data (name, sizes, a SHA-256 of the arrays), the model (name, parameter shapes and dtypes,
  its initial parameters for the first seed and its outputs on the first training examples),
  the loss (its values on fixed outputs and targets), the optimizer (its first three updates at
  the first grid point, for fixed parameters and gradients of the model's shapes), and the
  probes with their options;
* ``runs`` — which runs the sweep holds: batch sizes and grid values.

Names and shapes compare exactly; the values computed by floating-point programs (``initial``,
``outputs``, ``losses``, ``updates``) compare with a relative tolerance (``TOLERANCE`` of the
vector's norm), since they differ in their last bits between CPUs with and without AVX-512 and
between CPU and GPU (TF32 matmuls), while another initialiser, activation, loss or optimizer
moves them by far more. Each is a short vector of summaries (per leaf: mean, root mean square
and the first values), computed eagerly on a handful of examples: milliseconds, no compilation.
The loss and the optimizer are probed on fixed inputs, so a change of model shows as a change
of model only.

``differences(stored, current)`` names what differs, one phrase per part, for the messages that
refuse a resumed sweep or an analysis given other data or another model than the sweep's.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd._util import array_digest, leaf_paths
from jaxsgd.engine.training import initial_params
from jaxsgd.hyperparams import traced_values
from jaxsgd.optimizers import make_optimizer

PyTree = Any
TOLERANCE = 2e-2  # relative (of the vector's norm), for values computed in floating point
PROBE_EXAMPLES = 4  # training examples the model, loss and optimizer are evaluated on
_NUMERIC = {"initial", "outputs", "losses", "updates"}


def _summary(tree: PyTree, first: int = 4) -> list[float]:
    """Per leaf: mean, root mean square and the first ``first`` values, as one list."""
    out: list[float] = []
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf, np.float64).ravel()
        out += [float(a.mean()), float(np.sqrt(np.mean(a * a))), *map(float, a[:first])]
    return out


def describe_data(data) -> dict:
    """Name, sizes, shapes and a SHA-256 of a ``Dataset``'s four arrays."""
    return {"name": data.name, "num_train": data.num_train, "num_test": data.num_test,
            "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "digest": array_digest(data.x_train, data.y_train, data.x_test, data.y_test)}


def _synthetic(shape: tuple[int, ...], phase: float, dtype=np.float32) -> np.ndarray:
    """Fixed values of ``shape`` (no random numbers: the same on every machine), in [-1, 1]."""
    n = math.prod(shape)
    return np.sin(0.37 * np.arange(n) + phase).reshape(shape).astype(dtype)


def describe_model(model, data, seed: int) -> dict:
    """The model's identity: name, parameter shapes and dtypes, initial parameters of ``seed``
    and outputs on the first ``PROBE_EXAMPLES`` training examples (summaries)."""
    params = initial_params(model.init, seed)
    outputs = model.apply(params, jnp.asarray(data.x_train[:PROBE_EXAMPLES]))
    shapes = [f"{'/'.join(p)}:{tuple(np.shape(l))}:{np.dtype(l.dtype)}"
              for p, l in zip(leaf_paths(params), jax.tree.leaves(params))]
    count = sum(math.prod(np.shape(l)) for l in jax.tree.leaves(params))
    return {"name": model.name, "parameters": shapes, "num_parameters": int(count),
            "initial": _summary(params), "outputs": _summary(outputs, first=8)}


def describe_loss(name: str | None, task, data) -> dict:
    """The loss's name and its value on each of ``PROBE_EXAMPLES`` fixed outputs and targets
    (class labels 0, 1, … or fixed regression targets): the loss alone, whatever the model."""
    k = data.num_outputs
    outputs = jnp.asarray(2 * _synthetic((PROBE_EXAMPLES, k), 0.0))
    targets = jnp.asarray(np.arange(PROBE_EXAMPLES) % data.num_classes if data.num_classes
                          else _synthetic((PROBE_EXAMPLES, *data.y_train.shape[1:]), 1.0))
    per_example = [float(task.loss(outputs[i:i + 1], targets[i:i + 1]))
                   for i in range(PROBE_EXAMPLES)]
    return {"name": name, "losses": per_example}


def describe_optimizer(config, optimizer, params_shape) -> dict:
    """The optimizer's name and its first three updates (summaries) at the first grid point, for
    fixed parameters and changing gradients of the model's shapes: the optimizer alone."""
    hp = jax.tree.map(lambda a: jnp.asarray(a[0]), traced_values(config.grid.runs()))
    tx = make_optimizer(optimizer, hp, config.num_steps(config.batch_sizes[0]), config.schedule,
                        tuple(config.decay_boundaries))
    leaves, treedef = jax.tree.flatten(params_shape)
    params = treedef.unflatten([jnp.asarray(_synthetic(l.shape, i, l.dtype))
                                for i, l in enumerate(leaves)])
    state, updates = tx.init(params), []
    for step in range(3):  # gradients that change between steps (else Adam's is Lion's)
        grads = treedef.unflatten([jnp.asarray((0.1 + step) * _synthetic(l.shape, 0.5 + i + step,
                                                                         l.dtype))
                                   for i, l in enumerate(leaves)])
        update, state = tx.update(grads, state, params)
        updates += _summary(update, first=4)
    return {"name": config.optimizer, "updates": updates}


def describe_probes(probes: Sequence) -> list:
    return [[p.name, p.every, *([dict(p.options)] if p.options else [])] for p in probes]


def provenance(config, data, model, task, optimizer=None, probes: Sequence | None = ()) -> dict:
    """What determines the runs (``run``) and which runs there are (``runs``); JSON-ready.

    ``config`` is the configuration as run (user parts recorded as "user:NAME"); ``optimizer``
    a built-in family's name or the user's factory. With ``optimizer`` None only the data,
    model and loss are described (what an analysis that trains nothing rebuilds).
    """
    model_part = describe_model(model, data, int(config.grid.seed[0]))
    loss_part = describe_loss(config.loss, task, data)
    if optimizer is None:
        return _json({"run": {"data": describe_data(data), "model": model_part,
                              "loss": loss_part}})
    run_config = config.to_dict()
    runs = {"batch_sizes": list(config.batch_sizes), "grid": run_config.pop("grid")}
    run_config["training"] = {k: v for k, v in run_config["training"].items()
                              if k != "batch_sizes"}
    return _json({"run": {"config": run_config, "data": describe_data(data), "model": model_part,
                          "loss": loss_part,
                          "optimizer": describe_optimizer(
                              config, optimizer, jax.eval_shape(model.init, jax.random.key(0))),
                          "probes": describe_probes(probes)},
                  "runs": runs})


def _json(value: dict) -> dict:
    """``value`` as it reads back from ``sweep.json`` (tuples become lists), so a fresh
    provenance and a stored one compare equal."""
    return json.loads(json.dumps(value))


def _close(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(b)
    a, b = np.where(both_nan, 0, a), np.where(both_nan, 0, b)
    return bool(np.linalg.norm(a - b) <= TOLERANCE * max(np.linalg.norm(b), 1e-30))


_WHAT = {
    ("model", "initial"): "its initial parameters differ (another initialiser or seed rule?)",
    ("model", "outputs"): "its outputs on the same inputs differ (another activation or "
                          "architecture?)",
    ("loss", "losses"): "its values on the same outputs differ",
    ("optimizer", "updates"): "its updates from the same gradient differ",
    ("data", "digest"): "its arrays differ",
    ("model", "parameters"): "its parameter shapes differ",
}


def differences(stored: dict, current: dict, parts: Sequence[str] | None = None,
                where: str = "the folder") -> list[str]:
    """What differs between two provenances (``run`` and ``runs``), one phrase each ("X here
    but Y in {where}"); empty if nothing does. ``parts`` limits the comparison to those parts of
    ``run`` (e.g. ("data", "model", "loss") for an analysis that trains nothing)."""
    out: list[str] = []
    old_run, new_run = stored.get("run", {}), current.get("run", {})
    names = parts if parts is not None else sorted(set(old_run) | set(new_run))
    for part in names:
        a, b = old_run.get(part), new_run.get(part)
        if part == "config":
            out += _config_differences(a or {}, b or {}, where)
        elif part == "probes":
            if a != b:
                out.append(f"the probes are {b} here but {a} in {where}")
        elif isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                same = (_close(a[key], b[key]) if key in _NUMERIC and key in a and key in b
                        else a.get(key) == b.get(key))
                if not same:
                    what = _WHAT.get((part, key)) or (f"{key} is {b.get(key)!r} here but "
                                                      f"{a.get(key)!r} in {where}")
                    out.append(f"{part}: {what}")
        elif a != b:
            out.append(f"{part} differs")
    if parts is None:
        old, new = stored.get("runs", {}), current.get("runs", {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"{key} are {new.get(key)!r} here but {old.get(key)!r} in {where}")
    return out


def _config_differences(a: dict, b: dict, where: str) -> list[str]:
    out = []
    for section in sorted(set(a) | set(b)):
        x, y = a.get(section, {}), b.get(section, {})
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                out.append(f"{section}.{key} is {y.get(key)!r} here but {x.get(key)!r} in "
                           f"{where}")
    return out


# What an analysis rebuilds, the argument that gives it, and the values that identify it
# (names are not compared: the same arrays or function under another name are the same).
_REBUILT = {"data": ("data", ("digest",)),
            "model": ("model", ("parameters", "initial", "outputs")),
            "loss": ("loss", ("losses",))}


def analysis_differences(stored: dict, current: dict) -> dict[str, str]:
    """{argument: what differs} between a sweep's provenance and the data, model and loss an
    analysis rebuilt (``current``: ``provenance(...)`` without an optimizer); empty if none."""
    out = {}
    old, new = stored.get("run", {}), current.get("run", {})
    for part, (argument, keys) in _REBUILT.items():
        a, b = old.get(part) or {}, new.get(part) or {}
        for key in keys:
            same = _close(a[key], b[key]) if key in _NUMERIC else a.get(key) == b.get(key)
            if key in a and key in b and not same:
                out[argument] = _WHAT.get((part, key), f"its {key} differ")
                break
    return out
