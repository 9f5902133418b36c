"""The compiled programs of a batch-size group, sharded over the runs.

Each per-run pure function of ``jaxsgd.training`` becomes ``jit(shard_map(vmap(f)))``: the run
axis (leading axis of hyperparameters, seeds and state) is split over the ``"runs"`` mesh axis,
every device vmaps over its own runs, and the data, the step numbers and the evaluation slots
are replicated (``PartitionSpec()``: unbatched, so per-step ``lax.cond`` stay branches). No
collective runs inside a program: runs never talk to each other. ``shard_map`` rather than
``jit`` with ``in_shardings`` makes that placement explicit, and it is indifferent to the
mesh's axis types (``jax.make_mesh`` defaults to Explicit axes, with which a sharded
``jit(vmap)`` whose runs index a shared data set fails to trace). Its varying-axis type check
is off (``check_vma=False``): with no collective there is nothing for it to protect, and it
rejects the sampler's ``lax.cond`` whose branches differ only in that annotation.

Programs are cached on (static spec, model, task, probes, mesh), so a sweep with new grid
values reuses them; XLA compiles each once per shape (a chunk of a different length is a new
shape: the engine keeps chunk lengths equal where it can).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
from jax.sharding import PartitionSpec

from jaxsgd.devices import RUNS
from jaxsgd.losses import Task
from jaxsgd.models import Model
from jaxsgd.probes import Probe
from jaxsgd.training import TrainSpec, initial_params, make_trainer

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
    key = ("group", spec, model_key, task.name, tuple(probes), mesh)
    if key not in _CACHE:
        trainer = make_trainer(spec, model.init, model.apply, task.loss, task.metrics,
                               tuple(probes))
        _CACHE[key] = GroupPrograms(
            init=_sharded(trainer.init, mesh, (0, 0, 0, None)),
            advance=_sharded(trainer.advance, mesh, (0, 0, None, None, None), donate=(0,)),
            finish=_sharded(trainer.finish, mesh, (0, 0, None), donate=(0,)),
        )
    return _CACHE[key]


def init_params_program(model: Model, mesh, model_key: Any):
    """``seeds [R] -> initial params [R, ...]``, sharded over runs, cached per model and mesh.

    Initial parameters depend on the seed only, so one call serves every batch-size group
    (compiling a vmapped flax init costs ~2.5 s on CPU: once a sweep, not once a group).
    """
    key = ("init", model_key, mesh)
    if key not in _CACHE:
        _CACHE[key] = _sharded(partial(initial_params, model.init), mesh, (0,))
    return _CACHE[key]
