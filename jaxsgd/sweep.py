"""The sweep engine: every run of a batch-size group as one jit-compiled, vmapped program.

``run_sweep(config)``:
1. validates the configuration, loads and checks the data set, builds the model — all before
   anything is compiled (bad input fails fast with a ``ConfigError``/``DataError``);
2. puts the data on the device once; every run reads the same arrays (they enter the compiled
   program unbatched, ``in_axes=None``);
3. for each batch size, builds the per-run pure functions (``jaxsgd.training``), vmaps them over
   the runs of the grid and jits them; the program is cached on the static configuration, so a
   sweep with new learning rates, seeds or other grid values reuses it without recompiling;
4. writes each group's labelled results as soon as it finishes (``jaxsgd.results``).

Runs of different batch sizes are separate programs, not padded to the largest batch.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsgd.config import ConfigError, SweepConfig, validate
from jaxsgd.data import Dataset, check_dataset, load_dataset
from jaxsgd.evaluation import EvalData, eval_slots, evaluation_steps
from jaxsgd.losses import Task, task_for
from jaxsgd.models import Model, make_model
from jaxsgd.optimizers import HParams
from jaxsgd.probes import Probe
from jaxsgd.results import SweepResult, combine, group_dataset, prepare_output, save_group
from jaxsgd.training import TrainData, TrainSpec, initial_params, make_trainer

_PROGRAMS: dict[tuple, Any] = {}


def grid_hparams(config: SweepConfig) -> tuple[HParams, np.ndarray]:
    """The grid flattened to runs: (HParams of [runs] float32 arrays, seeds [runs] int32)."""
    runs = config.grid.runs()
    hp = HParams(**{k: runs[k] for k in HParams._fields})
    return hp, runs["seed"]


def prepare(config: SweepConfig, data: Dataset | None = None, model: Model | None = None):
    """Validate everything and build (dataset, model, task) without compiling anything."""
    validate(config)
    if data is None:
        data = load_dataset(config.data, **dict(config.data_options))
    data = check_dataset(data)
    validate(config, num_train=data.num_train)
    if config.eval_train_examples is not None and config.eval_train_examples > data.num_train:
        raise ConfigError(f"evaluation.train_examples: {config.eval_train_examples} is larger "
                          f"than the training set ({data.num_train} examples)")
    task = task_for(data.num_classes)
    if task.name == "regression" and config.target_metric not in (None, "train_loss", "test_loss"):
        raise ConfigError(f"target.metric: {config.target_metric!r} needs accuracy, but "
                          f"{data.name!r} is a regression task; use train_loss or test_loss")
    if model is None:
        model = make_model(config.model, data.input_shape, data.num_outputs,
                           **dict(config.model_options))
    out_shape = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0)),
                               jax.ShapeDtypeStruct((2, *data.input_shape), jnp.float32))
    if out_shape.shape != (2, data.num_outputs):
        raise ConfigError(f"model: outputs have shape {out_shape.shape[1:]} per example but the "
                          f"data set needs ({data.num_outputs},)")
    return data, model, task


def train_data(config: SweepConfig, data: Dataset) -> TrainData:
    """Device copies of the training and evaluation sets, made once per sweep."""
    m = config.eval_train_examples or data.num_train
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    return TrainData(x=x, y=y, eval=EvalData(x_train=x[:m], y_train=y[:m],
                                             x_test=jax.device_put(data.x_test),
                                             y_test=jax.device_put(data.y_test)))


def train_spec(config: SweepConfig, batch_size: int, num_train: int) -> TrainSpec:
    steps = evaluation_steps(config, batch_size)
    return TrainSpec(
        batch_size=batch_size, num_steps=config.num_steps(batch_size), num_train=num_train,
        num_eval_slots=len(np.unique(steps)), optimizer=config.optimizer,
        schedule=config.schedule, decay_boundaries=tuple(config.decay_boundaries),
        sampling=config.sampling, divergence_factor=config.divergence_factor)


def group_program(spec: TrainSpec, model: Model, task: Task, probes: Sequence[Probe] = (),
                  model_key: Any = None):
    """Jitted, vmapped (init, advance, finish) for one group; cached on the static inputs.

    ``model_key`` identifies the model (e.g. its config); by default the model's functions.
    """
    key = (spec, _model_key(model, model_key), task.name, tuple(probes))
    if key not in _PROGRAMS:
        trainer = make_trainer(spec, model.init, model.apply, task.loss, task.metrics,
                               tuple(probes))
        _PROGRAMS[key] = (
            jax.jit(jax.vmap(trainer.init, in_axes=(0, 0, 0, None))),
            jax.jit(jax.vmap(trainer.advance, in_axes=(0, 0, None, None, None)),
                    donate_argnums=0),
            jax.jit(jax.vmap(trainer.finish, in_axes=(0, 0, None)), donate_argnums=0),
        )
    return _PROGRAMS[key]


def _model_key(model: Model, model_key: Any) -> Any:
    return model_key if model_key is not None else (model.init, model.apply)


def init_program(model: Model, model_key: Any = None):
    """Jitted, vmapped ``seeds [runs] -> initial params [runs, ...]``, cached per model.

    Initial parameters depend on the seed only, so one call serves every batch-size group
    (compiling a vmapped flax init costs ~2.5 s on CPU: once a sweep, not once a group).
    """
    key = ("init", _model_key(model, model_key))
    if key not in _PROGRAMS:
        _PROGRAMS[key] = jax.jit(jax.vmap(partial(initial_params, model.init)))
    return _PROGRAMS[key]


def run_group(config: SweepConfig, batch_size: int, data: TrainData, model: Model, task: Task,
              probes: Sequence[Probe] = (), model_key: Any = None):
    """Train every run of the grid at one batch size; returns the final ``RunState`` (device)."""
    spec = train_spec(config, batch_size, int(data.x.shape[0]))
    init, advance, finish = group_program(spec, model, task, probes, model_key)
    hp, seeds = grid_hparams(config)
    slot_of_step, _ = eval_slots(evaluation_steps(config, batch_size), spec.num_steps)
    params = init_program(model, model_key)(seeds)
    state = init(hp, seeds, params, data)
    state = advance(state, hp, data, jnp.arange(spec.num_steps, dtype=jnp.int32),
                    jnp.asarray(slot_of_step))
    return finish(state, hp, data)


def run_sweep(
    config: SweepConfig,
    out: str | os.PathLike | None = None,
    *,
    data: Dataset | None = None,
    model: Model | None = None,
    probes: Sequence[Probe] = (),
    overwrite: bool = False,
    verbose: bool = False,
) -> SweepResult:
    """Run every (batch size × grid point) of ``config``; return labelled results.

    Args:
      config: the sweep (``SweepConfig``); its grid values are traced, never recompiled.
      out: results folder; each group is written there when it finishes. An existing non-empty
        folder is refused unless ``overwrite``.
      data: a ``Dataset`` to use instead of ``config.data`` (e.g. ``jaxsgd.data.from_arrays``).
      model: a ``Model`` to use instead of ``config.model``.
      probes: measurements run inside the training scan (``jaxsgd.probes``).
      verbose: print one line per finished group (compile and run times).
    """
    dataset, model_obj, task = prepare(config, data, model)
    model_key = None if model is not None else (
        config.model, json.dumps(dict(config.model_options), sort_keys=True),
        dataset.input_shape, dataset.num_outputs)
    folder = prepare_output(out, config, overwrite) if out is not None else None
    device_data = train_data(config, dataset)
    groups, params = [], {}
    for batch_size in config.batch_sizes:
        start = time.perf_counter()
        state = run_group(config, batch_size, device_data, model_obj, task, probes, model_key)
        state = jax.device_get(state)
        probe_outputs = {p.name: (p.every, o) for p, o in zip(probes, state.probe_outputs)}
        ds = group_dataset(config, batch_size, state.evals, np.asarray(state.diverged_step),
                           probe_outputs)
        groups.append(ds)
        params[batch_size] = state.params
        if folder is not None:
            save_group(folder, ds, state.params)
        if verbose:
            runs = config.grid.num_runs
            steps = config.num_steps(batch_size)
            print(f"batch size {batch_size}: {runs} runs x {steps} steps in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    metrics = combine(groups)
    metrics.attrs["complete"] = 1
    return SweepResult(config=config, metrics=metrics, params=params)
