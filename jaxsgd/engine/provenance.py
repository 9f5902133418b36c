"""Provenance: what determines a sweep's runs, recorded with its results and checked wherever
they are resumed or rebuilt.

``provenance(parts, probes)`` describes a sweep in two parts kept apart:

* ``run`` — what determines every run: the configuration without its grid and batch sizes,
  the data (name, sizes, a SHA-256 of the arrays), the model (name, parameter shapes and dtypes,
  its initial parameters for the first seed and its outputs on the first training examples),
  a user's own loss (its values on fixed outputs and targets) and optimizer (its first three
  updates at the first grid point, for fixed parameters and changing gradients of the model's
  shapes) — a built-in one is identified by its name and grid values — and the probes with
  their options;
* ``runs`` — which runs the sweep holds: batch sizes and grid values;
* ``runtime`` — where they were computed (``describe_runtime``): platform, device count, the
  devices the runs were split over, processes, usable cores, JAX and jaxlib versions.
  Recorded, never compared: a resumed or rebuilt sweep may run elsewhere. But it is what
  makes the numbers bitwise reproducible: on CPU, float32 rounding depends on the device count
  (README, "Reproducibility"), so a sweep resumed on another runtime warns.

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

from jaxsgd._util import array_digest, is_user_part, leaf_paths
from jaxsgd.engine.training import initial_params
from jaxsgd.hyperparams import traced_values
from jaxsgd.optimizers import make_optimizer
from jaxsgd.runtime import usable_cores

PyTree = Any
TOLERANCE = 2e-2  # relative (of the vector's norm), for values computed in floating point
PROBE_EXAMPLES = 4  # training examples the model, loss and optimizer are evaluated on
_NUMERIC = {"initial", "outputs", "losses", "updates"}


def _summary(tree: PyTree, first: int = 4) -> list[float]:
    """Per leaf: mean, root mean square and the first ``first`` values (on the host: no
    operation to compile)."""
    out: list[float] = []
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.asarray(leaf, np.float64).ravel()
        out += [float(a.mean()), float(np.sqrt(np.mean(a * a))), *map(float, a[:first])]
    return out


def describe_data(data) -> dict:
    """Name, sizes, shapes and a SHA-256 of a ``Dataset``'s four arrays, and the positions of
    injected outliers (``jaxsgd.data.transforms.inject_outliers``) when there are any."""
    described = {"name": data.name, "num_train": data.num_train, "num_test": data.num_test,
                 "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "digest": array_digest(data.x_train, data.y_train, data.x_test, data.y_test)}
    if getattr(data, "outliers", None):  # where injected outliers are (transforms)
        described["outliers"] = data.outliers
    return described


def _synthetic(shape: tuple[int, ...], phase: float, dtype=np.float32) -> np.ndarray:
    """Fixed values of ``shape`` (no random numbers: the same on every machine), in [-1, 1]."""
    n = math.prod(shape)
    return np.sin(0.37 * np.arange(n) + phase).reshape(shape).astype(dtype)


def _values(config, data, model, task, optimizer, shapes, initial=None) -> dict[str, list[float]]:
    """Every computed value of a provenance: the model's initial parameters (``initial``, the
    first seed's, when the sweep computed them already) and outputs; for a user's own loss its
    values on fixed outputs and targets; for a user's own optimizer its first three updates
    (per-leaf summaries, on the host). A built-in loss or optimizer is identified exactly by its
    name and grid values in the configuration, so nothing is computed for it. ``shapes``: the
    model's parameter shapes (``jax.eval_shape`` of its init).

    Run eagerly, op by op: JAX caches each operation's executable by shape, so after the first
    sweep of a process this costs milliseconds (a compiled program per sweep would cost a
    compilation whenever the model, loss or optimizer changes: +40% on the test suite).
    """
    if initial is None:
        initial = initial_params(model.init, int(config.grid.seed[0]))
    x = jnp.asarray(data.x_train[:PROBE_EXAMPLES])
    values = {"initial": _summary(initial), "outputs": _summary(model.apply(initial, x), first=8)}
    if is_user_part(config.loss):  # the loss alone: fixed outputs and targets
        outputs = 2 * _synthetic((PROBE_EXAMPLES, data.num_outputs), 0.0)
        targets = (np.arange(PROBE_EXAMPLES) % data.num_classes if data.num_classes
                   else _synthetic((PROBE_EXAMPLES, *data.y_train.shape[1:]), 1.0))
        values["losses"] = [float(task.loss(jnp.asarray(outputs[i:i + 1]),
                                            jnp.asarray(targets[i:i + 1])))
                            for i in range(PROBE_EXAMPLES)]
    if optimizer is not None and callable(optimizer):  # fixed parameters, changing gradients
        leaves, treedef = jax.tree.flatten(shapes)
        params = treedef.unflatten([jnp.asarray(_synthetic(l.shape, i, l.dtype))
                                    for i, l in enumerate(leaves)])
        hp = jax.tree.map(lambda a: jnp.asarray(a[0]), traced_values(config.grid.runs()))
        tx = make_optimizer(optimizer, hp, config.num_steps(config.batch_sizes[0]),
                            config.schedule, tuple(config.decay_boundaries))
        state, updates = tx.init(params), []
        for step in range(3):  # gradients that change (else Adam's update is Lion's)
            grads = treedef.unflatten([jnp.asarray((0.1 + step) * _synthetic(
                l.shape, 0.5 + i + step, l.dtype)) for i, l in enumerate(leaves)])
            update, state = tx.update(grads, state, params)
            updates += _summary(update)
        values["updates"] = updates
    return values


def describe_probes(probes: Sequence) -> list:
    return [[p.name, p.every, *([dict(p.options)] if p.options else [])] for p in probes]


def describe_runtime(mesh=None) -> dict:
    """Where runs are computed: platform, ``devices`` (all of JAX's: on CPU they set the thread
    pool), ``mesh`` (the devices a sweep's runs are split over), processes, usable cores of
    this process, JAX and jaxlib versions."""
    import jaxlib

    devices = jax.devices()
    return {"platform": devices[0].platform, "devices": len(devices),
            "mesh": len(devices) if mesh is None else int(mesh.size),
            "processes": jax.process_count(), "usable_cores": usable_cores(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def runtime_text(runtime: dict) -> str:
    """One line: "8 CPU devices (runs on 8), 2 usable cores, 1 process, jax 0.10.2"."""
    return (f"{runtime['devices']} {runtime['platform'].upper()} device(s) (runs on "
            f"{runtime['mesh']}), {runtime['usable_cores']} usable cores, "
            f"{runtime['processes']} process(es), jax {runtime['jax']}")


def provenance(config, data, model, task, optimizer=None, probes: Sequence | None = (),
               initial: PyTree | None = None, mesh=None) -> dict:
    """What determines the runs (``run``), which runs there are (``runs``) and where they
    are computed (``runtime``, recorded only); JSON-ready.

    ``config`` is the configuration as run (user parts recorded as "user:NAME"); ``optimizer``
    a built-in family's name or the user's factory. With ``optimizer`` None only the data,
    model and loss are described (what an analysis that trains nothing rebuilds). ``initial``:
    the first seed's initial parameters when already computed (the sweep's own). ``mesh``: the
    sweep's devices.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    values = _values(config, data, model, task, optimizer, shapes, initial)
    model_part = {
        "name": model.name,
        "parameters": [f"{'/'.join(p)}:{tuple(l.shape)}:{np.dtype(l.dtype)}"
                       for p, l in zip(leaf_paths(shapes), jax.tree.leaves(shapes))],
        "num_parameters": int(sum(math.prod(l.shape) for l in jax.tree.leaves(shapes))),
        "initial": values["initial"], "outputs": values["outputs"]}
    loss = {"name": config.loss}
    if "losses" in values:
        loss["losses"] = values["losses"]
    run = {"data": describe_data(data), "model": model_part, "loss": loss}
    if optimizer is None:
        return _json({"run": run})
    run_config = config.to_dict()
    runs = {"batch_sizes": list(config.batch_sizes), "grid": run_config.pop("grid")}
    run_config["training"] = {k: v for k, v in run_config["training"].items()
                              if k != "batch_sizes"}
    run.update(config=run_config, probes=describe_probes(probes),
               optimizer={"name": config.optimizer,
                          **({"updates": values["updates"]} if "updates" in values else {})})
    return _json({"run": run, "runs": runs, "runtime": describe_runtime(mesh)})


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
            if key not in a or key not in b:  # not recorded (a built-in loss): nothing to check
                continue
            same = _close(a[key], b[key]) if key in _NUMERIC else a[key] == b[key]
            if not same:
                out[argument] = _WHAT.get((part, key), f"its {key} differ")
                break
    return out
