"""The sweep engine: every run of a batch-size group as one compiled program, run in chunks.

``run_sweep(config)``:
1. validates the configuration, loads and checks the data set, builds the model — all before
   anything is compiled (bad input fails fast with a ``ConfigError``/``DataError``);
2. opens the results folder: new, or the same sweep's (resumed: finished groups are loaded,
   a checkpointed group continues), or refused if it holds a different sweep;
3. puts the data on every device once (replicated; every run of a device reads the same
   arrays) and the grid's runs split over the devices (``jaxsgd.engine.sharding``);
4. for each batch size, runs the group's compiled programs (``jaxsgd.engine.sharding``):
   ``init``, then ``advance`` over chunks of steps — after each chunk the progress bar moves
   and the whole group state is checkpointed — then ``finish``;
5. writes each group's labelled results as soon as it finishes (``jaxsgd.engine.results``).

Runs of different batch sizes are separate programs, not padded to the largest batch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd._util import USER_PART, check_int, is_user_part, user_part_name
from jaxsgd.config import ConfigError, SweepConfig, validate
from jaxsgd.data import Dataset, check_dataset, load_dataset
from jaxsgd.engine.evaluation import EvalData, eval_slots, evaluation_steps, snapshot_steps
from jaxsgd.engine.folder import (checkpoint_file, group_file, load_checkpoint, load_group,
                                  open_output, save_checkpoint, save_group, save_tree,
                                  snapshot_file, snapshot_files)
from jaxsgd.engine.provenance import analysis_differences, differences, provenance
from jaxsgd.engine.progress import SweepProgress
from jaxsgd.engine.results import SweepResult, combine, group_dataset
from jaxsgd.engine.sharding import (GroupPrograms, abstract_replicated, abstract_runs, barrier,
                                    compile_ahead, group_programs, init_params_program,
                                    is_main_process, pad_runs, padded_size, replicate, run_mesh,
                                    shard_runs, to_host)
from jaxsgd.engine.training import TrainData, TrainSpec
from jaxsgd.hyperparams import HParams, hparams, traced_values
from jaxsgd.losses import PerExampleLoss, Task, task_for
from jaxsgd.models import Model, make_model
from jaxsgd.optimizers import OptimizerFactory
from jaxsgd.probes.base import Probe, checked_probes

MAX_CHUNKS = 16  # default: a group runs in at most this many chunks of equal length


def grid_hparams(config: SweepConfig) -> tuple[HParams, np.ndarray]:
    """The grid flattened to runs: (HParams of [runs] float32 arrays, seeds [runs] int32)."""
    runs = config.grid.runs()
    return traced_values(runs), runs["seed"]


class Parts(NamedTuple):
    """What a sweep is made of, built and checked by ``prepare`` before anything compiles.

    config: the configuration as run: a user's own optimizer or loss recorded by name
        ("user:NAME", ``jaxsgd._util.user_part_name``).
    optimizer: a built-in family's name, the user's factory ``hp -> optax transformation``, or
        None when the configuration records a user's optimizer that was not given (an analysis
        that does not train needs none).
    """

    config: SweepConfig
    data: Dataset
    model: Model
    task: Task
    optimizer: Union[str, OptimizerFactory, None]


def prepare(config: SweepConfig, data: Dataset | None = None, model: Model | None = None, *,
            optimizer: OptimizerFactory | None = None,
            loss: PerExampleLoss | None = None) -> Parts:
    """Validate everything and build the sweep's ``Parts`` without compiling anything.

    ``data``, ``model``, ``optimizer`` and ``loss`` are the user's own parts, used instead of
    the configured ones (``run_sweep``) and recorded in the returned configuration as
    "user:NAME" (their options dropped) — except data equal to what the configuration loads,
    which keeps its configured name. A configuration that records a user's part needs that part
    again (a ``ConfigError`` says which argument to pass), except the optimizer, which only
    training needs (``Parts.optimizer`` is then None).
    """
    if optimizer is not None:
        if not callable(optimizer):
            raise ConfigError(f"optimizer: expected a factory hp -> optax.GradientTransformation "
                              f"(or a name in the configuration), got {optimizer!r}")
        config = config.replace(optimizer=user_part_name(optimizer))
    if loss is not None:
        if not callable(loss):
            raise ConfigError(f"loss: expected a function (outputs, targets) -> per-example "
                              f"losses (or a name in the configuration), got {loss!r}")
        config = config.replace(loss=user_part_name(loss))
    elif is_user_part(config.loss):
        raise ConfigError(f"training.loss: the sweep was trained with the user's own loss "
                          f"{config.loss!r}; pass it as loss=")
    if model is not None:
        config = config.replace(model=USER_PART + model.name, model_options={})
    elif is_user_part(config.model):
        raise ConfigError(f"model.name: the sweep was run with the user's own model "
                          f"{config.model!r}; pass it as model=")
    validate(config)
    if data is not None:
        data = check_dataset(data)
        if not _is_configured_data(config, data):
            config = config.replace(data=USER_PART + data.name, data_options={})
    elif is_user_part(config.data):
        raise ConfigError(f"data.name: the sweep was run on the user's own data {config.data!r}; "
                          f"pass it as data=")
    else:
        data = check_dataset(load_dataset(config.data, **dict(config.data_options)))
    validate(config, num_train=data.num_train)
    if config.eval_train_examples is not None and config.eval_train_examples > data.num_train:
        raise ConfigError(f"evaluation.train_examples: {config.eval_train_examples} is larger "
                          f"than the training set ({data.num_train} examples)")
    try:
        task = task_for(data.num_classes, loss if loss is not None else config.loss)
    except ValueError as e:
        raise ConfigError(f"training.{e}") from None
    if task.name == "regression" and config.target_metric not in (None, "train_loss", "test_loss"):
        raise ConfigError(f"target.metric: {config.target_metric!r} needs accuracy, but "
                          f"{data.name!r} is a regression task; use train_loss or test_loss")
    if model is None:
        model = make_model(config.model, data.input_shape, data.num_outputs,
                           **dict(config.model_options))
    params_shape = jax.eval_shape(model.init, jax.random.key(0))
    out_shape = jax.eval_shape(model.apply, params_shape,
                               jax.ShapeDtypeStruct((2, *data.input_shape), jnp.float32))
    if out_shape.shape != (2, data.num_outputs):
        raise ConfigError(f"model: outputs have shape {out_shape.shape[1:]} per example but the "
                          f"data set needs ({data.num_outputs},)")
    if loss is not None:
        targets = jax.ShapeDtypeStruct((2, *data.y_train.shape[1:]), data.y_train.dtype)
        shape = jax.eval_shape(loss, out_shape, targets).shape
        if shape != (2,):
            raise ConfigError(f"loss: the user's loss must return one loss per example (shape "
                              f"(2,) for 2 examples), got shape {shape}")
    if optimizer is not None:
        tx = optimizer(hparams())
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise ConfigError(f"optimizer: the factory must return an optax "
                              f"GradientTransformation, got {type(tx).__name__}")
    elif not is_user_part(config.optimizer):
        optimizer = config.optimizer
    return Parts(config, data, model, task, optimizer)


def _is_configured_data(config: SweepConfig, data: Dataset) -> bool:
    """Whether ``data`` holds exactly the arrays the configuration loads (same name, equal
    arrays); a data set that cannot be loaded here is not the configured one."""
    if data.name != config.data or is_user_part(config.data):
        return False
    try:
        configured = check_dataset(load_dataset(config.data, **dict(config.data_options)))
    except (ValueError, OSError):
        return False
    return all(a.dtype == b.dtype and np.array_equal(a, b)
               for a, b in zip(configured[:4], data[:4]))


def rebuild(result: SweepResult, data: Dataset | None = None, model: Model | None = None, *,
            loss: PerExampleLoss | None = None) -> Parts:
    """The data, model and task a finished sweep was trained with, for an analysis.

    Built from the sweep's configuration, or from the user's parts where it records them
    (refused without them: the ``ConfigError`` names the argument to pass), then checked against
    the sweep's provenance: data whose arrays differ, a model whose parameter shapes, initial
    parameters or outputs differ, or a loss whose values differ are refused, naming the argument
    that gives the sweep's own.
    """
    parts = prepare(result.config, data, model, loss=loss)
    if result.provenance is not None:
        current = provenance(parts.config, parts.data, parts.model, parts.task)
        wrong = analysis_differences(result.provenance, current)
        if wrong:
            argument, what = next(iter(wrong.items()))
            raise ConfigError(f"{argument}: the {argument} here differs from the sweep's "
                              f"({what}); pass the sweep's own as {argument}=")
    return parts


def train_data(config: SweepConfig, data: Dataset, mesh=None) -> TrainData:
    """The training and evaluation sets on the devices, made once per sweep.

    With a ``mesh`` every device of it gets one copy (replicated global arrays); without, the
    default device holds them.
    """
    m = config.eval_train_examples or data.num_train
    host = TrainData(x=data.x_train, y=data.y_train,
                     eval=EvalData(x_train=data.x_train[:m], y_train=data.y_train[:m],
                                   x_test=data.x_test, y_test=data.y_test))
    return replicate(host, mesh) if mesh is not None else jax.device_put(host)


def train_spec(config: SweepConfig, batch_size: int, num_train: int,
               eval_slice: int | None = 1024,
               optimizer: Union[str, OptimizerFactory, None] = None,
               stage: int = 0) -> TrainSpec:
    """The static spec of one group starting at ``batch_size`` — of its stage ``stage`` when
    the batch grows (``SweepConfig.stages``); ``optimizer``: the user's factory (default: the
    configured family)."""
    steps = evaluation_steps(config, batch_size)
    stages = config.stages(batch_size) if config.grows else ()
    return TrainSpec(
        batch_size=stages[stage].batch_size if stages else batch_size,
        num_steps=config.num_steps(batch_size), num_train=num_train,
        num_eval_slots=len(np.unique(steps)),
        optimizer=config.optimizer if optimizer is None else optimizer,
        schedule=config.schedule, decay_boundaries=tuple(config.decay_boundaries),
        sampling=config.sampling, divergence_factor=config.divergence_factor,
        divergence_horizon=config.divergence_horizon, spike_factor=config.spike_factor,
        accumulation=config.accumulation, horizon_batch_size=config.horizon_batch_size,
        horizon_b1=config.horizon_b1, lr_scaling=config.lr_scaling,
        lr_batch_size=config.lr_batch_size, eval_slice=eval_slice,
        stop_metric=config.target_metric if config.stop_at_target else None,
        stop_value=float(config.target_value) if config.stop_at_target else 0.0,
        stages=stages, stage=stage,
        clock_steps=(config.budget // batch_size
                     if stages and config.budget_unit == "examples" else 0))


def train_specs(config: SweepConfig, batch_size: int, num_train: int,
                eval_slice: int | None = 1024,
                optimizer: Union[str, OptimizerFactory, None] = None) -> tuple[TrainSpec, ...]:
    """The specs of every stage of the group starting at ``batch_size`` (one without growth)."""
    return tuple(train_spec(config, batch_size, num_train, eval_slice, optimizer, stage=s)
                 for s in range(len(config.growth_boundaries) + 1))


def chunk_length(num_steps: int, chunk_steps: int | None) -> int:
    """Steps per chunk: ``chunk_steps`` (capped at the run), or by default the smallest
    divisor of ``num_steps`` giving at most ``MAX_CHUNKS`` equal chunks (one compiled shape)."""
    if chunk_steps is not None:
        return min(chunk_steps, num_steps)
    return next(c for c in range(-(-num_steps // MAX_CHUNKS), num_steps + 1)
                if num_steps % c == 0)


@dataclass
class _Sweep:
    """What every group of one ``run_sweep`` call shares (device arrays are global arrays)."""

    config: SweepConfig
    model: Model
    model_key: Any
    task: Task
    optimizer: Union[str, OptimizerFactory]
    probes: tuple[Probe, ...]
    mesh: Any
    data: TrainData
    hparams: HParams  # [padded runs]
    seeds: jax.Array  # [padded runs]
    folder: Path | None
    provenance: dict
    chunk_steps: int | None
    eval_slice: int | None
    progress: SweepProgress | None
    snapshots: dict = field(default_factory=dict)  # {B: {step: host state}} without a folder
    _params: Any = None

    @property
    def num_runs(self) -> int:
        return self.config.grid.num_runs

    def initial_params(self):
        """Initial parameters of every run [padded runs, ...], computed once per sweep."""
        if self._params is None:
            program = init_params_program(self.model, self.mesh, self.model_key)
            self._params = program(self.seeds)
        return self._params


def _configured_model_key(config: SweepConfig, model: Model | None, data: Dataset) -> Any:
    """A configured model's identity for the program caches (its name, options and shapes);
    None for the user's own model (identified by its functions)."""
    if model is not None:
        return None
    return (config.model, json.dumps(dict(config.model_options), sort_keys=True),
            data.input_shape, data.num_outputs)


def _model_key(model: Model, model_key: Any) -> Any:
    """Identity of a model for the program cache: its config, or its functions."""
    return model_key if model_key is not None else (model.init, model.apply)


def _unpad(tree, runs: int):
    return jax.tree.map(lambda a: a[:runs], tree)


def _state_template(sweep: _Sweep, stages: Sequence[Any], runs: int):
    """The structure of a group's host state (``[runs, ...]``), without computing (or
    compiling) anything. Every stage of a batch-size schedule must carry the same structure:
    a probe whose outputs' shapes depend on the batch size is refused here."""
    params_shape = jax.eval_shape(
        init_params_program(sweep.model, sweep.mesh, sweep.model_key), sweep.seeds)
    shapes = [jax.eval_shape(programs.init, sweep.hparams, sweep.seeds, params_shape,
                             sweep.data) for programs in stages]
    for s, shape in enumerate(shapes[1:], start=1):
        if shape != shapes[0]:
            raise ConfigError(f"training.batch_growth: the run state of stage {s} differs from "
                              f"stage 0's (a probe's outputs depend on the batch size?); a "
                              f"batch-size schedule needs the same shapes at every stage")
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((runs, *s.shape[1:]), s.dtype),
                        shapes[0])


def span_starts(specs: Sequence[TrainSpec], chunk_steps: int | None) -> set[int]:
    """Where spans may start: each stage's first step and then every chunk length of that
    stage (``chunk_length`` of the stage's steps: one compiled span length per stage)."""
    if not specs[0].stages:
        return set(range(0, specs[0].num_steps, chunk_length(specs[0].num_steps, chunk_steps)))
    return {t for st in specs[0].stages for t in range(
        st.first_step, st.first_step + st.num_steps, chunk_length(st.num_steps, chunk_steps))}


def segments(start: int, num_steps: int, starts: set[int], snapshots: Sequence[int]) -> list[int]:
    """Boundaries of the spans ``advance`` runs, from ``start`` to ``num_steps``: every span
    start (chunks and stages: ``span_starts``) and every snapshot step (a span ends there, so
    the state after that many steps reaches the host). Each distinct span length of a stage is
    one compiled program."""
    inner = set(starts) | {int(t) for t in snapshots}
    return [start, *sorted(t for t in inner if start < t < num_steps), num_steps]


def run_group(sweep: _Sweep, batch_size: int, snapshot: Any = None, snapshot_step: int = 0):
    """Train every run at one batch size, in chunks; returns the final ``RunState`` on the
    host (numpy, ``[runs, ...]``, no padding). Resumes from the group's checkpoint if any, or
    starts from ``snapshot`` (a host state or ``SnapshotFile``, after ``snapshot_step`` steps).

    A batch-size schedule runs each stage's spans with the stage's programs, the state passing
    on unchanged (their state structures are checked equal before anything runs).
    After every span the group state is checkpointed (with a folder) and, at a snapshot step,
    kept: ``snapshot_bs{B}_step{T}.npz`` in the folder, else in ``sweep.snapshots``.
    """
    config, runs = sweep.config, sweep.num_runs
    specs = train_specs(config, batch_size, int(sweep.data.x.shape[0]), sweep.eval_slice,
                        sweep.optimizer)
    stages = [group_programs(spec, sweep.model, sweep.task, sweep.probes, sweep.mesh,
                             sweep.model_key) for spec in specs]
    num_steps = specs[0].num_steps
    template = _state_template(sweep, stages, runs)
    slots, _ = eval_slots(evaluation_steps(config, batch_size), num_steps)
    steps = np.arange(num_steps, dtype=np.int32)
    path = checkpoint_file(sweep.folder, batch_size) if sweep.folder else None
    expected = {"provenance": sweep.provenance, "batch_size": batch_size, "num_runs": runs}
    keep = [int(t) for t in snapshot_steps(config, batch_size)]
    start, host = 0, None
    if snapshot is not None:
        start = snapshot_step
        host = snapshot.state(template) if hasattr(snapshot, "state") else snapshot
    elif path is not None and path.is_file():
        host, header = load_checkpoint(path, template, expected)
        start = int(header["next_step"])
    bounds = segments(start, num_steps, span_starts(specs, sweep.chunk_steps), keep)
    spans = [(int(config.stage_of(batch_size, first)), first, last)
             for first, last in zip(bounds[:-1], bounds[1:])]
    _compile_group(sweep, stages, template, spans, fresh=host is None)
    if host is not None:
        state = shard_runs(pad_runs(host, padded_size(runs, sweep.mesh)), sweep.mesh)
    else:
        state = stages[0].init(sweep.hparams, sweep.seeds, sweep.initial_params(), sweep.data)
    sweep.progress.start_group(batch_size, runs, done_steps=start)
    if snapshot is None and start in keep:  # the state before any step of this call
        _keep_snapshot(sweep, batch_size, start, _unpad(to_host(state), runs), expected)
    for stage, first, last in spans:
        span = replicate((steps[first:last], slots[first:last]), sweep.mesh)
        state = stages[stage].advance(state, sweep.hparams, sweep.data, *span)
        checkpoint = path is not None and last < num_steps
        if last in keep or checkpoint:
            host = _unpad(to_host(state), runs)
            if last in keep:
                _keep_snapshot(sweep, batch_size, last, host, expected)
            if checkpoint and is_main_process():
                save_checkpoint(path, host, dict(expected, next_step=last))
        else:
            jax.block_until_ready(state)
        sweep.progress.advance(last - first, specs[stage].batch_size)
    state = stages[-1].finish(state, sweep.hparams, sweep.data)
    return _unpad(to_host(state), runs)


def _compile_group(sweep: _Sweep, stages: Sequence[GroupPrograms], template,
                   spans: Sequence[tuple[int, int, int]], fresh: bool) -> None:
    """Compile every program the group will call — its ``init`` (when ``fresh``), each stage's
    ``advance`` for each span length in ``spans`` [(stage, first, last)], ``finish`` — side by
    side, before any runs (``compile_ahead``; the state as the abstract ``template``)."""
    state = abstract_runs(template, sweep.mesh)
    calls = []
    if fresh:
        calls.append((stages[0].init, (sweep.hparams, sweep.seeds, sweep.initial_params(),
                                       sweep.data)))
    for stage, length in sorted({(stage, last - first) for stage, first, last in spans}):
        steps = abstract_replicated((length,), np.int32, sweep.mesh)
        calls.append((stages[stage].advance, (state, sweep.hparams, sweep.data, steps, steps)))
    calls.append((stages[-1].finish, (state, sweep.hparams, sweep.data)))
    compile_ahead(calls)


def _keep_snapshot(sweep: _Sweep, batch_size: int, step: int, host, expected: dict) -> None:
    """Keep the group's host state after ``step`` steps: a file in the folder (written once),
    else in memory."""
    if sweep.folder is None:
        sweep.snapshots.setdefault(batch_size, {})[step] = host
        return
    file = snapshot_file(sweep.folder, batch_size, step)
    if is_main_process() and not file.is_file():
        save_tree(file, host, dict(expected, step=step))


def run_sweep(
    config: SweepConfig,
    out: str | os.PathLike | None = None,
    *,
    data: Dataset | None = None,
    model: Model | None = None,
    optimizer: OptimizerFactory | None = None,
    loss: PerExampleLoss | None = None,
    probes: Sequence[Probe] = (),
    overwrite: bool = False,
    verbose: bool = False,
    progress: bool = True,
    chunk_steps: int | None = None,
    devices: Sequence[Any] | None = None,
    eval_slice: int | None = 1024,
) -> SweepResult:
    """Run every (batch size × grid point) of ``config``; return labelled results.

    Args:
      config: the sweep (``SweepConfig``); its grid values are traced, never recompiled.
      out: results folder; each group is written there when it finishes and checkpointed
        after every chunk. If it already holds this same sweep, the sweep resumes (finished
        groups are loaded, a checkpointed group continues); a different sweep there is
        refused unless ``overwrite``.
      data: a ``Dataset`` to use instead of ``config.data`` (e.g. ``jaxsgd.data.from_arrays``).
      model: a ``Model`` to use instead of ``config.model`` (e.g. ``jaxsgd.from_module``).
      optimizer: the user's own optimizer instead of ``config.optimizer``: a factory of the
        run's traced hyperparameters, ``hp -> optax.GradientTransformation`` (e.g.
        ``lambda hp: optax.lion(hp.learning_rate, b1=hp.momentum)``; ``hp.learning_rate`` is
        the scheduled rate; ``jaxsgd.optimizers.make_optimizer``).
      loss: the user's own loss instead of ``config.loss``: ``loss(outputs [B, K], targets)
        -> [B]`` per-example losses; the sweep minimises their mean (``jaxsgd.losses``).
      probes: measurements run inside the training scan (``jaxsgd.probes.base``).
      verbose: print one line per finished group.
      progress: show a progress bar (runs, steps, examples/s, ETA) between chunks.
      chunk_steps: optimizer steps per chunk (default: at most 16 equal chunks per group).
        Results do not depend on it beyond float rounding; a resumed sweep equals an
        uninterrupted one bitwise when both use the same chunk length.
      devices: devices to split the runs over (default: all devices of all processes).
      eval_slice: evaluation examples per slice (bounds evaluation memory to
        ``runs x eval_slice`` activations); None evaluates each set at once.
    """
    sweep = _open_sweep(config, out, data=data, model=model, optimizer=optimizer, loss=loss,
                        probes=probes, overwrite=overwrite, progress=progress,
                        chunk_steps=chunk_steps, devices=devices, eval_slice=eval_slice)
    config, folder, probes, record = sweep.config, sweep.folder, sweep.probes, sweep.provenance
    params_shape = jax.eval_shape(sweep.model.init, jax.random.key(0))  # one run's
    groups, params = [], {}
    try:
        for batch_size in config.batch_sizes:
            if folder is not None and group_file(folder, batch_size).is_file():
                ds, params[batch_size] = load_group(folder, batch_size, params_shape)
                groups.append(ds)
                sweep.progress.skip(config.num_steps(batch_size))
                continue
            start = time.perf_counter()
            state = run_group(sweep, batch_size)
            probe_outputs = {p.name: (p.every, o) for p, o in zip(probes, state.probe_outputs)}
            ds = group_dataset(config, batch_size, state.evals, np.asarray(state.diverged_step),
                               probe_outputs)
            groups.append(ds)
            params[batch_size] = state.params
            if folder is not None and is_main_process():
                save_group(folder, ds, state.params)
                checkpoint_file(folder, batch_size).unlink(missing_ok=True)
            if verbose:
                sweep.progress.write(
                    f"batch size {batch_size}: {sweep.num_runs} runs x "
                    f"{config.num_steps(batch_size)} steps in {time.perf_counter() - start:.1f} s")
    finally:
        sweep.progress.close()
    barrier("jaxsgd-sweep-done")
    metrics = combine(groups)
    metrics.attrs["complete"] = 1
    snapshots = snapshot_files(folder) if folder is not None else sweep.snapshots
    return SweepResult(config=config, metrics=metrics, params=params, provenance=record,
                       snapshots=snapshots)


def _open_sweep(config: SweepConfig, out=None, *, data=None, model=None, optimizer=None,
                loss=None, probes=(), overwrite=False, progress=True, chunk_steps=None,
                devices=None, eval_slice=1024) -> _Sweep:
    """Check every argument, build the parts, open the folder and put the data and runs on the
    devices: everything a sweep's groups share (``run_sweep``'s arguments)."""
    try:
        if chunk_steps is not None:
            check_int("chunk_steps", chunk_steps, unit="optimizer steps")
        if eval_slice is not None:
            check_int("eval_slice", eval_slice, unit="examples, or None")
        probes = checked_probes(probes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config, dataset, model_obj, task, optimizer_part = prepare(config, data, model,
                                                               optimizer=optimizer, loss=loss)
    if optimizer_part is None:
        raise ConfigError(f"optimizer.name: the sweep was configured with the user's own "
                          f"optimizer {config.optimizer!r}; pass it as optimizer=")
    model_key = _configured_model_key(config, model, dataset)
    mesh = run_mesh(devices, max_size=config.grid.num_runs)
    hp, seeds = pad_runs(grid_hparams(config), padded_size(config.grid.num_runs, mesh))
    total = sum(config.num_steps(b) for b in config.batch_sizes)
    sweep = _Sweep(config=config, model=model_obj, model_key=_model_key(model_obj, model_key),
                   task=task, optimizer=optimizer_part, probes=probes, mesh=mesh,
                   data=train_data(config, dataset, mesh), hparams=shard_runs(hp, mesh),
                   seeds=shard_runs(seeds, mesh), folder=None, provenance={},
                   chunk_steps=chunk_steps, eval_slice=eval_slice, progress=None)
    # The first run's initial parameters (the first seed's) from the sweep's own program,
    # which training needs anyway: the provenance costs no extra compilation.
    first = jax.tree.map(lambda a: a[0], to_host(sweep.initial_params()))
    sweep.provenance = provenance(config, dataset, model_obj, task, optimizer_part, probes,
                                  initial=first, mesh=mesh)
    if out is not None:
        sweep.folder = open_output(out, config, sweep.provenance, overwrite)
    # Only now (the folder accepted) does the progress bar appear.
    sweep.progress = SweepProgress(total, enabled=progress and is_main_process())
    return sweep


def continue_from(result: SweepResult, batch_size: int, step: int, *, data=None, model=None,
                  optimizer=None, loss=None, probes=(), progress: bool = False,
                  chunk_steps: int | None = None, devices=None,
                  eval_slice: int | None = 1024) -> SweepResult:
    """Continue every run of one batch size from its snapshot after ``step`` steps to the end
    of its budget; the result holds that group alone (metrics from the start: the snapshot
    carries the evaluations before ``step``), its later snapshots in memory.

    The parts are the sweep's: its configuration, and the user's own data, model, optimizer,
    loss and the same probes (as given to ``run_sweep``), checked against its provenance.
    With nothing changed, the continued runs equal the uninterrupted ones (to float rounding;
    bitwise with the same spans).
    """
    snapshot = result._snapshot(batch_size, step)
    config = result.config  # all batch sizes: log-spaced points depend on the smallest
    sweep = _open_sweep(config, data=data, model=model, optimizer=optimizer, loss=loss,
                        probes=probes, progress=progress, chunk_steps=chunk_steps,
                        devices=devices, eval_slice=eval_slice)
    if result.provenance is not None:
        wrong = differences(result.provenance, sweep.provenance, where="the sweep")
        if wrong:
            raise ConfigError(f"continue_from: not the sweep's parts ({'; '.join(wrong)}); "
                              f"pass the data, model, optimizer, loss and probes it ran with")
    try:
        state = run_group(sweep, batch_size, snapshot, step)
    finally:
        sweep.progress.close()
    outputs = {p.name: (p.every, o) for p, o in zip(sweep.probes, state.probe_outputs)}
    ds = group_dataset(config, batch_size, state.evals, np.asarray(state.diverged_step), outputs)
    metrics = combine([ds])
    metrics.attrs["complete"] = 1
    return SweepResult(config=config, metrics=metrics, params={batch_size: state.params},
                       provenance=sweep.provenance, snapshots=sweep.snapshots)
