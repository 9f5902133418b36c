"""Labelled sweep results: building, saving and loading them.

A sweep's metrics are one ``xarray.Dataset`` with dimensions

* ``batch_size``;
* ``learning_rate`` and ``seed`` always, plus every other grid field that was swept
  (``momentum``, ``weight_decay``, ``warmup``, ``decay``); unswept ones are scalar coordinates;
* the evaluation axis, named after the budget unit: ``examples`` (nominal examples seen) or
  ``step``. Coordinates ``step`` and ``examples`` along it (2-D with ``batch_size``) give the
  actual optimizer step and examples seen at each evaluation.

Variables: ``{train,test}_{loss,accuracy}`` and ``batch_loss`` (mean minibatch loss since the
previous evaluation) per evaluation, NaN from the step a run diverged; ``diverged``,
``diverged_step`` (−1 if never); ``steps_to_target``/``examples_to_target`` (inf if not
reached) when the sweep has a target; probe outputs ``{probe}_{output}`` over ``{probe}_step``;
``run``, the index of each run along the leading axis of the final parameters.

On disk a results folder holds ``config.json`` (the sweep configuration, JSON), ``sweep.json``
(its fingerprint: configuration, data digest, model shapes, probes; ``jaxsgd.checkpoint``), and
per batch-size group ``group_bs{B}.nc`` (netCDF) and ``params_bs{B}.npz`` (final parameters,
leading [runs] axis), plus ``checkpoint_bs{B}.npz`` while a group is running. Each file is
written atomically (temporary name, then rename). Loading never unpickles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr

from jaxsgd.checkpoint import fingerprint_difference
from jaxsgd.config import GRID_FIELDS, TARGET_METRICS, SweepConfig
from jaxsgd.devices import barrier, is_main_process
from jaxsgd.evaluation import evaluation_points, evaluation_steps, eval_slots
from jaxsgd.targets import steps_to_target, target_metric_values

PyTree = Any
CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"
_GROUP_RE = re.compile(r"group_bs(\d+)\.nc$")


@dataclass
class SweepResult:
    """Metrics (labelled) and final parameters ({batch_size: pytree with leading [runs] axis})."""

    config: SweepConfig
    metrics: xr.Dataset
    params: dict[int, PyTree] = field(default_factory=dict)

    def run_params(self, batch_size: int, **selection) -> PyTree:
        """Final parameters of the single run picked by ``selection`` (e.g. learning_rate=0.1)."""
        run = int(self.metrics["run"].sel(batch_size=batch_size, **selection).item())
        return jax.tree.map(lambda leaf: leaf[run], self.params[batch_size])


def grid_dims(config: SweepConfig) -> list[str]:
    """Grid fields that are result dimensions: learning_rate, seed, and any swept field."""
    axes = config.grid.axes()
    return [n for n in GRID_FIELDS if n in ("learning_rate", "seed") or len(axes[n]) > 1]


def eval_dim(config: SweepConfig) -> str:
    return "examples" if config.budget_unit == "examples" else "step"


def _to_grid(config: SweepConfig, array: np.ndarray) -> np.ndarray:
    """[runs, *rest] in grid C order -> [*grid_dims, *rest] (unswept axes squeezed)."""
    axes = config.grid.axes()
    full = array.reshape(*(len(v) for v in axes.values()), *array.shape[1:])
    keep = set(grid_dims(config))
    squeeze = tuple(i for i, n in enumerate(axes) if n not in keep)
    return full.squeeze(axis=squeeze) if squeeze else full


def group_dataset(
    config: SweepConfig,
    batch_size: int,
    evals: dict[str, np.ndarray],
    diverged_step: np.ndarray,
    probe_outputs: dict[str, tuple[int, dict[str, np.ndarray]]] | None = None,
) -> xr.Dataset:
    """Labelled results of one batch-size group.

    Args:
      evals: metric -> [runs, num_eval_slots] (slots = distinct evaluated steps, increasing).
      diverged_step: [runs] int, −1 if the run never diverged.
      probe_outputs: probe name -> (every, {output: [runs, points, ...]}).
    """
    dims = grid_dims(config)
    axes = config.grid.axes()
    edim = eval_dim(config)
    points = evaluation_points(config)
    steps = evaluation_steps(config, batch_size)
    _, point_slot = eval_slots(steps, config.num_steps(batch_size))
    diverged = diverged_step >= 0
    after = diverged[:, None] & (steps[None, :] >= diverged_step[:, None])

    data_vars: dict[str, Any] = {}
    curves = {}
    for name, buf in evals.items():
        curve = np.where(after, np.nan, np.asarray(buf)[:, point_slot])
        curves[name] = curve
        data_vars[name] = ([*dims, edim], _to_grid(config, curve))
    data_vars["diverged"] = (dims, _to_grid(config, diverged))
    data_vars["diverged_step"] = (dims, _to_grid(config, diverged_step.astype(np.int32)))
    data_vars["run"] = (dims, _to_grid(config, np.arange(len(diverged_step), dtype=np.int32)))
    if config.target_metric is not None:
        metric = target_metric_values(curves, config.target_metric)
        s = steps_to_target(metric, steps, config.target_value,
                            TARGET_METRICS[config.target_metric], diverged)
        data_vars["steps_to_target"] = (dims, _to_grid(config, s))
        data_vars["examples_to_target"] = (dims, _to_grid(config, s * batch_size))

    coords: dict[str, Any] = {n: list(axes[n]) for n in dims}
    coords.update({n: axes[n][0] for n in GRID_FIELDS if n not in dims})
    coords[edim] = points
    coords["step" if edim == "examples" else "examples"] = (
        edim, steps * batch_size if edim == "step" else steps)
    for pname, (every, outputs) in (probe_outputs or {}).items():
        pdim = f"{pname}_step"
        for key, values in outputs.items():
            if key == "step":
                raise ValueError(f"probe {pname!r}: output name 'step' is reserved for the "
                                 f"{pdim!r} dimension; rename the output")
            n = values.shape[1]
            pstep = np.arange(n) * every
            mask = diverged[:, None] & (pstep[None, :] >= diverged_step[:, None])
            mask = mask.reshape(mask.shape + (1,) * (values.ndim - 2))
            values = np.where(mask, np.nan, values.astype(np.float64))
            extra = [f"{pname}_{key}_dim{j}" for j in range(values.ndim - 2)]
            data_vars[f"{pname}_{key}"] = ([*dims, pdim, *extra], _to_grid(config, values))
            coords[pdim] = np.arange(n) * every
    ds = xr.Dataset(data_vars, coords=coords)
    return ds.expand_dims(batch_size=[batch_size])


def combine(groups: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate per-group datasets along ``batch_size`` (sorted)."""
    groups = sorted(groups, key=lambda g: int(g.batch_size[0]))
    return xr.concat(groups, dim="batch_size", coords="different", compat="equals",
                     join="outer", data_vars="all")


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def open_output(out: str | os.PathLike, config: SweepConfig, fingerprint: dict,
                overwrite: bool = False) -> Path:
    """Open the results folder of a sweep, new or resumed.

    * missing or empty: created, with ``config.json`` and ``sweep.json`` (the fingerprint);
    * holding the same sweep (same fingerprint): returned as it is, to resume;
    * holding a different sweep: refused (``FileExistsError`` saying what differs), unless
      ``overwrite``, which empties it;
    * anything else that is not empty: refused, whatever ``overwrite`` says.

    In a multi-process sweep every process makes the checks (so all raise the same error),
    then process 0 alone changes the folder while the others wait.
    """
    out = Path(out)
    replace = False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / CONFIG_FILE).is_file():
            raise FileExistsError(f"refusing to use {str(out)!r}: it is not empty and not a "
                                  f"jaxsgd results folder (no {CONFIG_FILE})")
        replace = overwrite
        difference = fingerprint_difference(_stored_fingerprint(out), fingerprint)
        if difference is not None and not overwrite:
            raise FileExistsError(
                f"results folder {str(out)!r} holds a different sweep ({difference}); choose "
                "another folder or pass overwrite=True (--overwrite) to replace it")
    barrier("jaxsgd-output-checked")
    if is_main_process():
        if replace:
            shutil.rmtree(out)
        if not out.exists() or not any(out.iterdir()):
            out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
            _atomic_write(out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
            text = json.dumps(fingerprint, indent=2, sort_keys=True)
            _atomic_write(out / SWEEP_FILE, lambda tmp: Path(tmp).write_text(text))
    barrier("jaxsgd-output-ready")
    return out


def _stored_fingerprint(folder: Path) -> dict:
    try:
        return json.loads((folder / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        # No readable fingerprint: compare the configurations alone (data unknown).
        return {"config": json.loads((folder / CONFIG_FILE).read_text()), "data": None}


def _flatten_params(params: PyTree) -> dict[str, np.ndarray]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        flat["/".join(keys)] = np.asarray(leaf)
    return flat


def _unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree


def save_group(out: Path, ds: xr.Dataset, params: PyTree) -> None:
    """Write one batch-size group (metrics then parameters), each file atomically."""
    b = int(ds.batch_size.values[0])
    def write_params(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **_flatten_params(params))

    _atomic_write(out / f"params_bs{b}.npz", write_params)
    _atomic_write(out / f"group_bs{b}.nc", lambda tmp: ds.to_netcdf(tmp, engine="netcdf4"))


def load_group(path: Path, batch_size: int) -> tuple[xr.Dataset, PyTree]:
    """Metrics and final parameters of one finished group of a results folder (no pickle)."""
    with xr.open_dataset(path / f"group_bs{batch_size}.nc", engine="netcdf4") as ds:
        ds = ds.load()
    with np.load(path / f"params_bs{batch_size}.npz", allow_pickle=False) as npz:
        params = _unflatten_params({k: npz[k] for k in npz.files})
    return ds, params


def load_sweep(path: str | os.PathLike) -> SweepResult:
    """Load a results folder written by ``run_sweep`` (possibly partial: finished groups only).

    ``result.metrics.attrs["complete"]`` tells whether every batch size of the config is there.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a jaxsgd results folder (no {CONFIG_FILE})")
    config = SweepConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    groups, params = [], {}
    for file in sorted(path.iterdir()):
        match = _GROUP_RE.match(file.name)
        if match:
            ds, params[int(match.group(1))] = load_group(path, int(match.group(1)))
            groups.append(ds)
    if not groups:
        raise FileNotFoundError(f"{str(path)!r} holds no finished batch-size group yet")
    metrics = combine(groups)
    metrics.attrs["complete"] = int(sorted(params) == sorted(config.batch_sizes))
    return SweepResult(config=config, metrics=metrics, params=params)
