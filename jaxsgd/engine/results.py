"""Labelled sweep results: building, saving and loading them.

A sweep's metrics are one ``xarray.Dataset`` with dimensions

* ``batch_size``;
* ``learning_rate`` and ``seed`` always, plus every other grid field that was swept
  (``momentum``, ``weight_decay``, ``warmup``, ``decay``); unswept ones are scalar coordinates;
* the evaluation axis, named after the budget unit: ``examples`` (nominal examples seen) or
  ``step``. Coordinates ``step`` and ``examples`` along it (2-D with ``batch_size``) give the
  actual optimizer step and examples seen at each evaluation; with a batch-size schedule,
  ``batch_size`` is each run's first stage's and ``stage_batch_size`` (2-D too) the batch size
  of the stage an evaluation falls in. With ``lr_scaling``, ``learning_rate_used`` (along
  ``learning_rate``, 2-D with ``batch_size``) is the rate the runs used.

Variables: ``{train,test}_{loss,accuracy}``, ``batch_loss`` (mean minibatch loss since the
previous evaluation), ``batch_loss_max`` and ``batch_loss_spikes`` (its largest minibatch loss
and its loss spikes: ``jaxsgd.engine.monitor``) per evaluation, NaN from the step a run
diverged; ``diverged``, ``diverged_step`` (−1 if never); ``steps_to_target``/``examples_to_target`` (inf if not
reached) when the sweep has a target; probe outputs ``{probe}_{output}`` over ``{probe}_step``;
``run``, the index of each run along the leading axis of the final parameters.

Saving and loading them is ``jaxsgd.engine.folder``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import xarray as xr

from jaxsgd.config import SweepConfig
from jaxsgd.engine.evaluation import eval_slots, evaluation_points, evaluation_steps
from jaxsgd.hyperparams import GRID_FIELDS
from jaxsgd.optimizers import learning_rate_factor
from jaxsgd.targets import metric_values, steps_to_target, target_direction

PyTree = Any


@dataclass
class SweepResult:
    """Metrics (labelled), final parameters ({batch_size: pytree with leading [runs] axis}) and
    the provenance of the runs (``jaxsgd.engine.provenance``: data, model, loss, optimizer,
    probes as run), against which analyses check the data and model they rebuild."""

    config: SweepConfig
    metrics: xr.Dataset
    params: dict[int, PyTree] = field(default_factory=dict)
    provenance: dict | None = None
    # {batch size: {step: the group's state after that many steps}}: host ``RunState``s with a
    # leading [runs] axis, or ``SnapshotFile``s of the results folder (read when asked).
    snapshots: dict[int, dict[int, Any]] = field(default_factory=dict)

    def probe(self, name: str, batch_size: int) -> xr.DataArray | xr.Dataset:
        """A probe's outputs at one batch size on their own axis: [*grid dims, step, ...].

        ``name`` is an output variable (``"noise_scale_b_simple"``, ``"lambda_max_value"``):
        a DataArray; or a probe's name (``"noise_scale"``): a Dataset of all its outputs, named
        without the prefix (``.b_simple``). In ``metrics`` every batch size shares one
        ``{probe}_step`` axis (the union of their measurement steps, NaN where a batch size has
        none); here the axis holds only this batch size's measurements, is named ``step``
        (optimizer steps) and carries ``examples`` (seen before that step: step × batch size
        without a batch-size schedule), so ``.sel(step=...)``
        and ``.sel(examples=...)`` work.
        """
        outputs = [v for v in self.metrics.data_vars
                   if f"{name}_step" in self.metrics[v].dims and str(v).startswith(f"{name}_")]
        if name not in self.metrics and outputs:
            return xr.Dataset({str(v)[len(name) + 1:]: self.probe(str(v), batch_size)
                               for v in outputs})
        if name not in self.metrics:
            probes = sorted(v for v in self.metrics.data_vars if any(
                str(d).endswith("_step") and str(d) != "step" for d in self.metrics[v].dims))
            raise KeyError(f"{name!r} is not a probe or probe output of this sweep; probe "
                           f"outputs: {', '.join(probes) or '(none)'}")
        values = self.metrics[name].sel(batch_size=batch_size)
        axis = next((d for d in values.dims if str(d).endswith("_step") and str(d) != "step"),
                    None)
        if axis is None:
            raise KeyError(f"{name!r} is an evaluation metric, not a probe output: select "
                           f"along {self.config.eval_dim!r}")
        steps = values[axis].values
        keep = steps < self.config.num_steps(batch_size)  # this group's measurement steps
        values = values.isel({axis: np.flatnonzero(keep)}).rename({axis: "step"})
        return values.assign_coords(
            examples=("step", self.config.examples_at(batch_size, values["step"].values)))

    def run_index(self, batch_size: int, **selection) -> int:
        """Index along the leading [runs] axis of the run picked by ``selection`` (e.g.
        learning_rate=0.1); every grid dimension with more than one value must be given."""
        if batch_size not in self.params and batch_size not in self.snapshots:
            raise KeyError(f"batch_size={batch_size!r}: no parameters of that batch size here "
                           f"(have {sorted(self.params)})")
        runs = self.metrics["run"].sel(batch_size=batch_size)
        selection = dict(selection)
        for name in [k for k in selection if k in runs.coords and k not in runs.dims]:
            value = runs.coords[name].item()  # a grid value that was not swept
            if not np.isclose(selection.pop(name), value):
                raise KeyError(f"run_params: {name} was not swept; it is {value!r} in every run")
        for name in [d for d in runs.dims if d not in selection and runs.sizes[d] == 1]:
            selection[name] = runs[name].item()  # one value: no choice to make
        missing = [d for d in runs.dims if d not in selection]
        unknown = [k for k in selection if k not in runs.dims]
        if missing or unknown:
            raise KeyError(f"run_params: give one value for each of {list(runs.dims)}"
                           + (f"; missing {missing}" if missing else "")
                           + (f"; {unknown} are not dimensions of the results" if unknown
                              else ""))
        return int(runs.sel(**selection).item())

    def snapshot_steps(self, batch_size: int) -> list[int]:
        """The optimizer steps after which this batch size's states were kept."""
        return sorted(self.snapshots.get(batch_size, {}))

    def _snapshot(self, batch_size: int, step: int) -> Any:
        kept = self.snapshots.get(batch_size, {})
        if step not in kept:
            raise KeyError(f"step={step!r}: no snapshot of batch size {batch_size} there (have "
                           f"steps {sorted(kept)}; configure them with snapshot_points, "
                           f"snapshot_log_points or snapshot_evaluations)")
        return kept[step]

    def run_params(self, batch_size: int, step: int | None = None, **selection) -> PyTree:
        """Parameters of the single run picked by ``selection`` (e.g. learning_rate=0.1): the
        final ones, or those after ``step`` optimizer steps (a snapshot step); every grid
        dimension of the results with more than one value must be given."""
        run = self.run_index(batch_size, **selection)
        if step is None:
            tree = self.params[batch_size]
        else:
            kept = self._snapshot(batch_size, step)
            tree = (kept.field("params", self.params[batch_size]) if hasattr(kept, "field")
                    else kept.params)
        return jax.tree.map(lambda leaf: leaf[run], tree)

    def run_state(self, batch_size: int, step: int, **selection) -> PyTree:
        """The whole state of one run after ``step`` optimizer steps (a snapshot step):
        parameters, optimizer state, sampler, keys, evaluation buffers, probe states — a
        ``RunState`` of the sweep that made it, or (read back from a folder) a dict of its
        fields. Continue runs from it with ``jaxsgd.engine.sweep.continue_from``."""
        run = self.run_index(batch_size, **selection)
        kept = self._snapshot(batch_size, step)
        state = kept.state() if hasattr(kept, "state") else kept
        return jax.tree.map(lambda leaf: leaf[run], state)


def grid_dims(config: SweepConfig) -> list[str]:
    """Grid fields that are result dimensions: learning_rate, seed, and any swept field."""
    axes = config.grid.axes()
    return [n for n in GRID_FIELDS if n in ("learning_rate", "seed") or len(axes[n]) > 1]


def to_grid(config: SweepConfig, array: np.ndarray) -> np.ndarray:
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
    edim = config.eval_dim
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
        data_vars[name] = ([*dims, edim], to_grid(config, curve))
    data_vars["diverged"] = (dims, to_grid(config, diverged))
    data_vars["diverged_step"] = (dims, to_grid(config, diverged_step.astype(np.int32)))
    data_vars["run"] = (dims, to_grid(config, np.arange(len(diverged_step), dtype=np.int32)))
    if config.target_metric is not None:
        metric = metric_values(curves, config.target_metric)
        s = steps_to_target(metric, steps, config.target_value,
                            target_direction(config.target_metric), diverged)
        data_vars["steps_to_target"] = (dims, to_grid(config, s))
        data_vars["examples_to_target"] = (dims, to_grid(config, config.examples_at(
            batch_size, s.astype(np.float64))))

    coords: dict[str, Any] = {n: list(axes[n]) for n in dims}
    coords.update({n: axes[n][0] for n in GRID_FIELDS if n not in dims})
    coords[edim] = points
    coords["step" if edim == "examples" else "examples"] = (
        edim, config.examples_at(batch_size, steps) if edim == "step" else steps)
    if config.lr_scaling != "none":  # the rate the runs used: the grid's, scaled to B
        factor = learning_rate_factor(batch_size, config.lr_batch_size, config.lr_scaling)
        coords["learning_rate_used"] = ("learning_rate",
                                        np.asarray(axes["learning_rate"]) * factor)
    if config.grows:  # the batch size of the stage each evaluated step belongs to
        sizes = np.asarray([st.batch_size for st in config.stages(batch_size)])
        coords["stage_batch_size"] = (edim, sizes[config.stage_of(batch_size, steps)])
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
            data_vars[f"{pname}_{key}"] = ([*dims, pdim, *extra], to_grid(config, values))
            coords[pdim] = np.arange(n) * every
    ds = xr.Dataset(data_vars, coords=coords)
    return ds.expand_dims(batch_size=[batch_size])


def combine(groups: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate per-group datasets along ``batch_size`` (sorted)."""
    groups = sorted(groups, key=lambda g: int(g.batch_size[0]))
    return xr.concat(groups, dim="batch_size", coords="different", compat="equals",
                     join="outer", data_vars="all")
