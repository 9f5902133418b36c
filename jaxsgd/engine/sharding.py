"""Runs over devices: the mesh, run-sharded global arrays, and a group's compiled programs.

A sweep's runs are independent, so the run axis of a batch-size group is split over every
device of every process (``jax.sharding`` mesh with one axis, ``"runs"``); the training set is
replicated, one copy per device. Host-side values always hold *all* runs (every process knows
the whole grid), and become global arrays with ``jax.make_array_from_callback``, which works the
same with one process or many (``jax.distributed``). How many CPU devices there are is chosen
before JAX starts, by ``jaxsgd.use_cpu_devices`` (``jaxsgd.runtime``), never here.

Each per-run pure function of ``jaxsgd.engine.training`` becomes ``jit(shard_map(vmap(f)))``:
the run axis (leading axis of hyperparameters, seeds and state) is split over the ``"runs"``
mesh axis, every device vmaps over its own runs, and the data, the step numbers and the
evaluation slots are replicated (``PartitionSpec()``: unbatched, so per-step ``lax.cond`` stay
branches). No collective runs inside a program: runs never talk to each other. ``shard_map``
rather than ``jit`` with ``in_shardings`` makes that placement explicit, and it is indifferent
to the mesh's axis types (``jax.make_mesh`` defaults to Explicit axes, with which a sharded
``jit(vmap)`` whose runs index a shared data set fails to trace). Its varying-axis type check
is off (``check_vma=False``): with no collective there is nothing for it to protect, and it
rejects the sampler's ``lax.cond`` whose branches differ only in that annotation.

Programs are cached on (static spec, model, task, probes, mesh), so a sweep with new grid
values reuses them; XLA compiles each once per shape (a chunk of a different length is a new
shape: the engine keeps chunk lengths equal where it can). The last evaluation (``finish``)
depends on no batch size, so one program serves every group of a sweep. ``compile_ahead``
compiles a group's programs side by side before the group runs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxsgd.engine.training import Group, TrainSpec, initial_params, make_trainer
from jaxsgd.losses import Task
from jaxsgd.models import Model
from jaxsgd.probes.base import Probe
from jaxsgd.runtime import usable_cores

RUNS = "runs"
PyTree = Any


def run_mesh(devices: Sequence[Any] | None = None, max_size: int | None = None):
    """A 1-D mesh ``("runs",)`` over ``devices`` (default: every device of every process),
    using at most ``max_size`` of them (fewer runs than devices: one run per device)."""
    devices = list(jax.devices() if devices is None else devices)[:max_size]
    if not devices:
        raise ValueError("devices: empty; give at least one device")
    return jax.sharding.Mesh(np.asarray(devices), (RUNS,),
                             axis_types=(jax.sharding.AxisType.Auto,))


def padded_size(num_runs: int, mesh) -> int:
    """Smallest multiple of the mesh size that holds ``num_runs`` runs."""
    d = mesh.size
    return -(-num_runs // d) * d


def pad_runs(tree: PyTree, size: int) -> PyTree:
    """Pad the leading [runs] axis of every host leaf to ``size`` by repeating the last run."""
    def pad(a):
        a = np.asarray(a)
        extra = size - a.shape[0]
        return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)])

    return jax.tree.map(pad, tree)


def shard_runs(tree: PyTree, mesh) -> PyTree:
    """Host leaves ``[runs, ...]`` (all runs, a multiple of the mesh size) -> global arrays
    split along runs over the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec(RUNS))

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def replicate(tree: PyTree, mesh) -> PyTree:
    """Host leaves -> global arrays with one full copy per device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def to_host(tree: PyTree) -> PyTree:
    """Global arrays -> numpy arrays holding every run, in every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def is_main_process() -> bool:
    """True in the process that writes files and shows progress (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------- programs

_CACHE: dict[tuple, Any] = {}
_RUN, _ALL = PartitionSpec(RUNS), PartitionSpec()


class GroupPrograms(NamedTuple):
    """Jitted, run-sharded functions of one batch-size group (shapes: R = runs, padded).

    init(hparams [R], seeds [R], params [R, ...], data) -> RunState [R, ...]
    advance(state, hparams, data, steps [S], slots [S]) -> RunState   (donates ``state``)
    finish(state, hparams, data) -> RunState                          (donates ``state``)
    """

    init: Any
    advance: Any
    finish: Any


def _sharded(fn, mesh, in_axes: Sequence[int | None], donate: tuple[int, ...] = ()):
    specs = tuple(_RUN if a == 0 else _ALL for a in in_axes)
    mapped = jax.shard_map(jax.vmap(fn, in_axes=tuple(in_axes)), mesh=mesh, in_specs=specs,
                           out_specs=_RUN, check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)


def group_programs(spec: TrainSpec, model: Model, task: Task, probes: Sequence[Probe], mesh,
                   model_key: Any) -> GroupPrograms:
    """The group's programs for ``mesh``, cached on the static inputs."""
    key = ("group", spec, model_key, task, tuple(probes), mesh)
    if key not in _CACHE:
        trainer = make_trainer(spec, model.init, model.apply, task.loss, task.metrics,
                               tuple(probes))
        # The finish program is keyed on the evaluation's static pieces alone (``Evaluation``,
        # its functions named by model_key and task): every batch size shares it.
        evaluation = Group(spec, model.init, model.apply, task.loss, task.metrics).evaluation
        finish_key = ("finish", replace(evaluation, model_apply=None, metrics=None), model_key,
                      task, mesh)
        if finish_key not in _CACHE:
            _CACHE[finish_key] = _sharded(trainer.finish, mesh, (0, 0, None), donate=(0,))
        _CACHE[key] = GroupPrograms(
            init=_sharded(trainer.init, mesh, (0, 0, 0, None)),
            advance=_sharded(trainer.advance, mesh, (0, 0, None, None, None), donate=(0,)),
            finish=_CACHE[finish_key],
        )
    return _CACHE[key]


def compile_ahead(calls: Sequence[tuple[Any, tuple]]) -> None:
    """Compile ``calls``, pairs (jitted program, its arguments), before they are made.

    Arguments may be abstract: ``jax.ShapeDtypeStruct`` with the sharding the call's array will
    have. Tracing and lowering run here, one program after another (Python); XLA's compilations
    run in threads, one per usable core, beside each other and beside the next lowering. Each
    compiled program lands in the cache its jitted function reads, so the calls then run at
    once with the very executables they would have compiled themselves (the same results).
    XLA:CPU already spreads one compilation over ~1.7 cores (the reference grid's span program:
    2.0 s of CPU in 1.2 s), so on 2 cores this saves ~0.4 s of a cold group's ~4 s; the more
    cores, the more it overlaps.
    """
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), usable_cores()))) as pool:
        compiled = [pool.submit(program.lower(*args).compile) for program, args in calls]
        for future in compiled:
            future.result()


def abstract_runs(tree: PyTree, mesh) -> PyTree:
    """``jax.ShapeDtypeStruct``s of ``tree``'s leaves ([runs, ...], runs padded for ``mesh``)
    as ``shard_runs`` places them: the arguments ``compile_ahead`` takes for a run state not
    yet computed."""
    sharding = NamedSharding(mesh, _RUN)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        (padded_size(s.shape[0], mesh), *s.shape[1:]), s.dtype, sharding=sharding), tree)


def abstract_replicated(shape: tuple[int, ...], dtype, mesh) -> jax.ShapeDtypeStruct:
    """The ``jax.ShapeDtypeStruct`` of a host array ``replicate`` puts on ``mesh``."""
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, _ALL))


def init_params_program(model: Model, mesh, model_key: Any):
    """``seeds [R] -> initial params [R, ...]``, sharded over runs, cached per model and mesh.

    Initial parameters depend on the seed only, so one call serves every batch-size group
    (compiling a vmapped flax init costs ~2.5 s on CPU: once a sweep, not once a group).
    """
    key = ("init", model_key, mesh)
    if key not in _CACHE:
        _CACHE[key] = _sharded(partial(initial_params, model.init), mesh, (0,))
    return _CACHE[key]
