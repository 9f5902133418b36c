"""Sweep configuration: the static description of a sweep and the grid of values that vary.

A sweep is two things kept apart (gymnax/evosax style):

* ``SweepConfig`` — everything static: data, model, optimizer family, schedule family, batch sizes,
  budget, evaluation schedule, target. Changing any of it may recompile.
* ``Grid`` — the values that vary across runs and enter the compiled program as traced arrays:
  one field per sweepable hyperparameter of ``jaxsgd.hyperparams`` (learning rate, momentum,
  Adam's b2 and eps, weight decay, warm-up fraction, decay factor, seed). Changing them never
  recompiles.

Both are frozen dataclasses, built in Python or from a TOML-shaped dict (``from_dict``), and
checked by ``validate`` before anything is compiled. Every error is a ``ConfigError`` whose
one-line message names the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np

from jaxsgd._util import is_user_part
from jaxsgd.hyperparams import GRID_FIELDS, HYPERPARAMETERS, unused_reason
from jaxsgd.targets import TARGET_METRICS

LOSSES = ("cross_entropy", "mse")  # the named losses of jaxsgd.losses
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
SAMPLINGS = ("epoch", "replacement")
LR_SCALINGS = ("none", "linear", "sqrt")  # jaxsgd.optimizers.scaled_learning_rate
BUDGET_UNITS = ("examples", "steps")


class ConfigError(ValueError):
    """An invalid sweep configuration; the message names the field and the bad value."""


class Stage(NamedTuple):
    """One stage of a run's batch-size schedule (``SweepConfig.stages``): ``num_steps``
    optimizer steps at ``batch_size``, global steps ``first_step`` ... ``first_step +
    num_steps − 1``, begun after ``first_example`` examples."""

    batch_size: int
    first_step: int
    num_steps: int
    first_example: int


class _GridMethods:
    def __post_init__(self) -> None:
        # A scalar is a one-element tuple (as in TOML); lists and arrays become tuples.
        for h in HYPERPARAMETERS:
            value = getattr(self, h.name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                value = (value,)
            object.__setattr__(self, h.name, tuple(np.asarray(value).tolist())
                               if isinstance(value, np.ndarray) else tuple(value))

    def axes(self) -> dict[str, tuple]:
        """Grid fields in result-dimension order."""
        return {name: getattr(self, name) for name in GRID_FIELDS}

    @property
    def num_runs(self) -> int:
        return math.prod(len(v) for v in self.axes().values())

    def runs(self) -> dict[str, np.ndarray]:
        """Flattened Cartesian product: {field: [num_runs]} in C order of ``axes()`` (float64,
        the seed int32; ``jaxsgd.hyperparams.traced_values`` makes a run's traced values)."""
        axes = self.axes()
        product = list(itertools.product(*axes.values()))
        return {
            h.name: np.asarray([p[i] for p in product], np.int32 if h.integer else np.float64)
            for i, h in enumerate(HYPERPARAMETERS)
        }


# The fields are the sweepable hyperparameters (``jaxsgd.hyperparams``), each a tuple of values.
Grid = dataclasses.make_dataclass(
    "Grid", [(h.name, tuple, field(default=h.default)) for h in HYPERPARAMETERS],
    bases=(_GridMethods,), frozen=True, namespace={"__module__": __name__})
Grid.__doc__ = ("Values swept across runs; the sweep is their Cartesian product.\n\n"
                + "\n".join(f"    {h.name}: {h.doc} [default {h.default}]"
                             for h in HYPERPARAMETERS))


@dataclass(frozen=True)
class SweepConfig:
    """Static description of a sweep (see module docstring).

    optimizer: a built-in family (``OPTIMIZERS``; ``jaxsgd.optimizers``). A sweep given the
        user's own factory (``run_sweep(optimizer=...)``) records it as "user:NAME".
    budget: training length per run, in ``budget_unit`` ("examples" seen or optimizer "steps").
        With examples, a run at batch size B takes budget // B steps.
    eval_every / eval_log_points / eval_points: evaluation schedule in ``budget_unit``: every k
        units, and/or this many log-spaced points, and/or exactly these points (a published
        protocol's evaluation points); the start and the end of training are always evaluated.
        If none is given, 16 evenly spaced evaluations.
    eval_train_examples: size of the fixed training subset used for train loss/accuracy (None: all).
    sampling: "epoch" (shuffle each epoch, without replacement) or "replacement".
    loss: "cross_entropy" or "mse" (on one-hot targets for classification); None: by the data
        set (cross-entropy for labels, mse for regression targets). ``jaxsgd.losses``. A sweep
        given the user's own loss (``run_sweep(loss=...)``) records it as "user:NAME".
    divergence_factor / divergence_horizon: a run is diverged at the first step whose minibatch
        loss is non-finite or whose running average over about ``divergence_horizon`` examples
        exceeds ``divergence_factor`` times its first minibatch loss (``jaxsgd.engine.monitor``:
        the same amount of data at every batch size, so one odd example at B = 1 does not
        count as divergence; B ≫ horizon: the single minibatch loss).
    spike_factor: a minibatch loss above this multiple of the running average is a spike;
        every evaluation records the interval's count (``batch_loss_spikes``) and largest
        minibatch loss (``batch_loss_max``).
    accumulation: each step's batch of B goes through as this many microbatches of B/k
        (memory for B/k examples' activations; the same mean loss and gradient). Must divide
        every batch size.
    lr_scaling / lr_batch_size: per-batch-size learning rates by a rule: the grid's
        learning_rate is the rate at ``lr_batch_size``, and at batch size B the runs use
        ε·(B/B_ref) ("linear", Goyal et al. 2017) or ε·√(B/B_ref) ("sqrt", Malladi et al. 2022)
        (``jaxsgd.optimizers.scaled_learning_rate``; per stage of a batch-size schedule). With
        B_ref = 1 the grid value is ε/B: runs at matched ε/B. The results keep the grid value as
        ``learning_rate`` and the rate used as the ``learning_rate_used`` coordinate
        [batch_size, learning_rate] (the first stage's). "none" (default): the grid's rate.
    horizon_batch_size / horizon_b1: Adam's β2 (and with ``horizon_b1`` β1, the momentum) is
        the grid's value at this batch size and is rescaled at every other one to keep its
        half-life in examples (``jaxsgd.optimizers.fixed_horizon``). None: β as given.
    batch_growth / growth_boundaries: a batch-size schedule (Smith et al. 2018): every run
        starts at its batch size B and multiplies it by ``batch_growth`` (an integer ≥ 2) at
        each boundary, a fraction of the budget (in its unit), so B, g·B, g²·B, ...: one stage
        per batch size (``stages``), parameters, optimizer state and sampler carried across.
        Results keep ``batch_size`` = the first stage's. With a budget in examples, the
        learning-rate schedule (warm-up, decay boundaries, cosine) follows the examples seen,
        as in a run at the first batch size throughout, so a rate decay and a batch increase
        at the same boundaries coincide. Default: no growth.
    target_metric / target_value: steps-to-target is the first evaluation step where the metric
        reaches the value (<= for losses and errors, >= for accuracies).
    stop_at_target: a run stops (parameters and optimizer state frozen) at the first evaluation
        where it meets the target, so its final parameters are those at the target: solutions
        compared "at the same training loss" (Keskar et al. 2017). Needs a target.
    decay_boundaries: for the 'step' schedule, fractions of the run where the rate is multiplied
        by ``decay``.
    snapshot_points / snapshot_log_points / snapshot_evaluations: where every run's full state
        (parameters, optimizer state, sampler, keys, buffers) is kept, in ``budget_unit`` like
        the evaluation schedule: exactly these points, and/or this many log-spaced points,
        and/or every evaluation point (``jaxsgd.engine.sweep``: snapshots).
    """

    data: str = "mnist1d"
    data_options: Mapping[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    schedule: str = "constant"
    decay_boundaries: tuple[float, ...] = (0.5, 0.75)
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    budget: int = 2**15
    budget_unit: str = "examples"
    eval_every: int | None = None
    eval_log_points: int = 0
    eval_points: tuple[int, ...] = ()
    eval_train_examples: int | None = None
    sampling: str = "epoch"
    loss: str | None = None
    divergence_factor: float = 10.0
    divergence_horizon: float = 256.0
    spike_factor: float = 3.0
    accumulation: int = 1
    batch_growth: int = 1
    growth_boundaries: tuple[float, ...] = ()
    horizon_batch_size: int | None = None
    horizon_b1: bool = False
    lr_scaling: str = "none"
    lr_batch_size: int | None = None
    target_metric: str | None = None
    target_value: float | None = None
    stop_at_target: bool = False
    snapshot_points: tuple[int, ...] = ()
    snapshot_log_points: int = 0
    snapshot_evaluations: bool = False
    grid: Grid = field(default_factory=Grid)

    @property
    def eval_dim(self) -> str:
        """The evaluation axis of the results: "examples" or "step" (the budget's unit)."""
        return "examples" if self.budget_unit == "examples" else "step"

    @property
    def grows(self) -> bool:
        """Whether runs grow their batch in stages (``batch_growth``)."""
        return bool(self.growth_boundaries)

    def stages(self, batch_size: int) -> tuple[Stage, ...]:
        """The stages of a run starting at ``batch_size``: one without growth.

        Stage s has batch size B·gˢ and ends at the s-th growth boundary b_s of the budget:
        with a budget in steps, at step ⌊b_s·budget⌋; in examples, at the last whole step
        within ⌊b_s·budget⌋ examples (so a run sees at most ``budget`` examples and each
        stage starts where the previous one stopped, without a partial batch).
        """
        ends = [int(b * self.budget) for b in self.growth_boundaries] + [self.budget]
        out, first, seen = [], 0, 0
        for s, end in enumerate(ends):
            size = batch_size * self.batch_growth**s
            n = end - first if self.budget_unit == "steps" else max(end - seen, 0) // size
            out.append(Stage(size, first, n, seen))
            first, seen = first + n, seen + n * size
        return tuple(out)

    def num_steps(self, batch_size: int) -> int:
        """Optimizer steps of a run starting at this batch size (all its stages): budget // B
        (examples) or budget (steps) without growth."""
        return sum(stage.num_steps for stage in self.stages(batch_size))

    def stage_of(self, batch_size: int, steps) -> np.ndarray:
        """The stage index [P] of each global optimizer step [P] (the last stage for the final
        step ``num_steps``); 0 everywhere without growth."""
        first = [stage.first_step for stage in self.stages(batch_size)]
        return np.searchsorted(first, np.asarray(steps), side="right") - 1

    def steps_at(self, batch_size: int, points) -> np.ndarray:
        """The optimizer step [P] int64 of a run starting at ``batch_size`` at each nominal
        point [P] of the budget's unit: the point itself (steps), or the last step by which at
        most that many examples were seen, ⌊p/B⌋ at a fixed batch size."""
        points = np.asarray(points, np.int64)
        if self.budget_unit == "steps":
            return points
        size, first, n, start = (np.asarray(column, np.int64)
                                 for column in zip(*self.stages(batch_size)))
        s = np.searchsorted(start, points, side="right") - 1
        return first[s] + np.minimum((points - start[s]) // size[s], n[s])

    def examples_at(self, batch_size: int, steps) -> np.ndarray:
        """Examples seen [P] before optimizer step ``steps`` [P] of a run starting at
        ``batch_size``: t·B at a fixed batch size, Σ_s B_s·clip(t − T_s, 0, n_s) in stages.
        Integer steps give int64; float steps (inf: never) give float64."""
        t = np.asarray(steps)
        stages = self.stages(batch_size)
        total = np.zeros(t.shape, np.float64)
        for i, st in enumerate(stages):
            span = t - st.first_step
            span = np.clip(span, 0, st.num_steps if i < len(stages) - 1 else None)
            total = total + st.batch_size * span
        return total.astype(np.int64) if np.issubdtype(t.dtype, np.integer) else total

    def to_dict(self) -> dict[str, Any]:
        """Nested TOML/JSON-shaped dict; ``from_dict(c.to_dict()) == c``."""
        d = {
            "data": {"name": self.data, **dict(self.data_options)},
            "model": {"name": self.model, **dict(self.model_options)},
            "optimizer": {
                "name": self.optimizer,
                "schedule": self.schedule,
                "decay_boundaries": list(self.decay_boundaries),
                "horizon_batch_size": self.horizon_batch_size,
                "horizon_b1": self.horizon_b1 or None,  # absent when False
                "lr_scaling": None if self.lr_scaling == "none" else self.lr_scaling,
                "lr_batch_size": self.lr_batch_size,
            },
            "training": {
                "batch_sizes": list(self.batch_sizes),
                "budget": self.budget,
                "budget_unit": self.budget_unit,
                "sampling": self.sampling,
                "loss": self.loss,
                "divergence_factor": self.divergence_factor,
                "divergence_horizon": self.divergence_horizon,
                "spike_factor": self.spike_factor,
                "accumulation": self.accumulation,
                "batch_growth": self.batch_growth if self.grows else None,  # absent: no growth
                "growth_boundaries": list(self.growth_boundaries) or None,
            },
            "evaluation": {
                "every": self.eval_every,
                "log_points": self.eval_log_points,
                "points": list(self.eval_points) or None,  # absent when empty
                "train_examples": self.eval_train_examples,
            },
            "target": {"metric": self.target_metric, "value": self.target_value,
                       "stop": self.stop_at_target or None},  # absent when False
            "snapshots": {"points": list(self.snapshot_points) or None,
                          "log_points": self.snapshot_log_points or None,
                          "evaluations": self.snapshot_evaluations or None},
            "grid": {k: list(v) for k, v in self.grid.axes().items()},
        }
        # TOML has no null: drop None values (and the snapshots table when it is empty).
        d = {s: {k: v for k, v in t.items() if v is not None} for s, t in d.items()}
        if not d["snapshots"]:
            del d["snapshots"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepConfig":
        """Build from a TOML-shaped dict, rejecting unknown sections/keys and wrong types."""
        return _from_dict(d)

    def replace(self, **changes) -> "SweepConfig":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- from_dict

# section -> {key: (attribute, kind)}; kind is checked by _coerce.
SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "optimizer": {
        "name": ("optimizer", "str"),
        "schedule": ("schedule", "str"),
        "decay_boundaries": ("decay_boundaries", "float_list"),
        "horizon_batch_size": ("horizon_batch_size", "int"),
        "horizon_b1": ("horizon_b1", "bool"),
        "lr_scaling": ("lr_scaling", "str"),
        "lr_batch_size": ("lr_batch_size", "int"),
    },
    "training": {
        "batch_sizes": ("batch_sizes", "int_list"),
        "budget": ("budget", "int"),
        "budget_unit": ("budget_unit", "str"),
        "sampling": ("sampling", "str"),
        "loss": ("loss", "str"),
        "divergence_factor": ("divergence_factor", "float"),
        "divergence_horizon": ("divergence_horizon", "float"),
        "spike_factor": ("spike_factor", "float"),
        "accumulation": ("accumulation", "int"),
        "batch_growth": ("batch_growth", "int"),
        "growth_boundaries": ("growth_boundaries", "float_list"),
    },
    "evaluation": {
        "every": ("eval_every", "int"),
        "log_points": ("eval_log_points", "int"),
        "points": ("eval_points", "int_list"),
        "train_examples": ("eval_train_examples", "int"),
    },
    "target": {"metric": ("target_metric", "str"), "value": ("target_value", "float"),
               "stop": ("stop_at_target", "bool")},
    "snapshots": {"points": ("snapshot_points", "int_list"),
                  "log_points": ("snapshot_log_points", "int"),
                  "evaluations": ("snapshot_evaluations", "bool")},
}
GRID_KINDS = {h.name: "int_list" if h.integer else "float_list" for h in HYPERPARAMETERS}
_SECTIONS = ("data", "model", *SCHEMA, "grid")


def _coerce(where: str, value: Any, kind: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: expected {expected}, got {value!r}")

    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_num = is_int or isinstance(value, float)
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int":
        if not is_int:
            raise bad("an integer")
        return value
    if kind == "float":
        if not is_num:
            raise bad("a number")
        return float(value)
    if kind in ("int_list", "float_list"):
        if is_num:  # a scalar is a one-element list
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad("a list of numbers")
        item = "int" if kind == "int_list" else "float"
        return tuple(_coerce(f"{where}[{i}]", v, item) for i, v in enumerate(value))
    raise AssertionError(kind)


def _from_dict(d: Mapping[str, Any]) -> SweepConfig:
    if not isinstance(d, Mapping):
        raise ConfigError(f"configuration: expected a table, got {d!r}")
    unknown = [k for k in d if k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; known sections: {', '.join(_SECTIONS)}")
    kwargs: dict[str, Any] = {}
    for section in ("data", "model"):
        if not isinstance(d.get(section, {}), Mapping):
            raise ConfigError(f"[{section}]: expected a table, got {d[section]!r}")
        table = dict(d.get(section, {}))
        if "name" in table:
            kwargs[section] = _coerce(f"{section}.name", table.pop("name"), "str")
        kwargs[f"{section}_options"] = table  # checked against the builder's signature later
    for section, keys in SCHEMA.items():
        table = d.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{section}]: expected a table, got {table!r}")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(
                    f"unknown key {section}.{key}; known keys: {', '.join(keys)}"
                )
            attr, kind = keys[key]
            kwargs[attr] = _coerce(f"{section}.{key}", value, kind)
    grid = d.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ConfigError(f"[grid]: expected a table, got {grid!r}")
    grid_kwargs = {}
    for key, value in grid.items():
        if key not in GRID_KINDS:
            raise ConfigError(f"unknown key grid.{key}; known keys: {', '.join(GRID_FIELDS)}")
        grid_kwargs[key] = _coerce(f"grid.{key}", value, GRID_KINDS[key])
    kwargs["grid"] = Grid(**grid_kwargs)
    return SweepConfig(**kwargs)


# --------------------------------------------------------------------------- validate


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: SweepConfig, num_train: int | None = None) -> SweepConfig:
    """Check every field; raise ``ConfigError`` naming the first bad one. Returns ``config``.

    ``num_train`` (training-set size), when known, also bounds the batch sizes.
    Names of data sets and models are checked where they are built (``jaxsgd.data``,
    ``jaxsgd.models``), before compilation.
    """
    c = config
    _check(c.optimizer in OPTIMIZERS or is_user_part(c.optimizer),
           f"optimizer.name: unknown optimizer {c.optimizer!r}; known: {', '.join(OPTIMIZERS)} "
           f"(or pass your own to run_sweep(optimizer=...))")
    _check(c.schedule in SCHEDULES,
           f"optimizer.schedule: unknown schedule {c.schedule!r}; known: {', '.join(SCHEDULES)}")
    for b in c.decay_boundaries:
        _check(0 < b < 1, f"optimizer.decay_boundaries: {b!r} is not a fraction in (0, 1)")
    _check(c.sampling in SAMPLINGS,
           f"training.sampling: unknown sampling {c.sampling!r}; known: {', '.join(SAMPLINGS)}")
    _check(c.loss in (None, *LOSSES) or is_user_part(c.loss),
           f"training.loss: unknown loss {c.loss!r}; known: {', '.join(LOSSES)} "
           f"(or pass your own to run_sweep(loss=...))")
    _check(c.budget_unit in BUDGET_UNITS,
           f"training.budget_unit: {c.budget_unit!r} is not one of {', '.join(BUDGET_UNITS)}")
    _check(len(c.batch_sizes) > 0, "training.batch_sizes: empty list; give at least one batch size")
    _check(len(set(c.batch_sizes)) == len(c.batch_sizes),
           f"training.batch_sizes: duplicate values in {list(c.batch_sizes)}")
    for b in c.batch_sizes:
        _check(isinstance(b, (int, np.integer)) and b > 0,
               f"training.batch_sizes: batch size {b!r} is not a positive integer")
        if num_train is not None:
            _check(b <= num_train,
                   f"training.batch_sizes: batch size {b} is larger than the training set "
                   f"({num_train} examples)")
    _check(c.budget > 0, f"training.budget: {c.budget!r} is not positive")
    if c.budget_unit == "examples":
        small = [b for b in c.batch_sizes if b > c.budget]
        _check(not small, f"training.budget: {c.budget} examples is less than one step at "
                          f"batch size {small[0] if small else ''}")
    _check(math.isfinite(c.divergence_factor) and c.divergence_factor > 1,
           f"training.divergence_factor: {c.divergence_factor!r} must be a finite number > 1")
    _check(math.isfinite(c.divergence_horizon) and c.divergence_horizon > 0,
           f"training.divergence_horizon: {c.divergence_horizon!r} must be a positive number "
           f"of examples")
    _check(math.isfinite(c.spike_factor) and c.spike_factor > 1,
           f"training.spike_factor: {c.spike_factor!r} must be a finite number > 1")
    _check(isinstance(c.accumulation, (int, np.integer)) and not isinstance(c.accumulation, bool)
           and c.accumulation >= 1,
           f"training.accumulation: {c.accumulation!r} is not a positive integer")
    for b in c.batch_sizes:
        _check(b % c.accumulation == 0,
               f"training.accumulation: {c.accumulation} microbatches do not divide batch size "
               f"{b}")
    _validate_growth(c, num_train)
    if c.horizon_batch_size is not None:
        _check(isinstance(c.horizon_batch_size, (int, np.integer))
               and not isinstance(c.horizon_batch_size, bool) and c.horizon_batch_size > 0,
               f"optimizer.horizon_batch_size: {c.horizon_batch_size!r} is not a positive "
               f"integer")
        _check(c.optimizer in ("adam", "adamw") or is_user_part(c.optimizer),
               f"optimizer.horizon_batch_size: set, but {c.optimizer!r} has no β2 to rescale "
               f"(adam, adamw, or your own optimizer reading hp.b2)")
    _check(not c.horizon_b1 or c.horizon_batch_size is not None,
           "optimizer.horizon_b1: true needs optimizer.horizon_batch_size")
    _check(c.lr_scaling in LR_SCALINGS,
           f"optimizer.lr_scaling: unknown rule {c.lr_scaling!r}; known: {', '.join(LR_SCALINGS)}")
    if c.lr_scaling == "none":
        _check(c.lr_batch_size is None,
               f"optimizer.lr_batch_size: {c.lr_batch_size!r} given, but optimizer.lr_scaling is "
               f"'none'; set the rule (linear or sqrt)")
    else:
        _check(isinstance(c.lr_batch_size, (int, np.integer))
               and not isinstance(c.lr_batch_size, bool) and c.lr_batch_size > 0,
               f"optimizer.lr_batch_size: {c.lr_batch_size!r} is not a positive integer (the "
               f"batch size at which grid.learning_rate applies, needed by lr_scaling = "
               f"{c.lr_scaling!r})")
    if c.eval_every is not None:
        _check(0 < c.eval_every <= c.budget,
               f"evaluation.every: {c.eval_every!r} must be in 1..budget ({c.budget})")
    _check(c.eval_log_points >= 0, f"evaluation.log_points: {c.eval_log_points!r} is negative")
    for point in c.eval_points:
        _check(isinstance(point, (int, np.integer)) and not isinstance(point, bool)
               and 0 <= point <= c.budget,
               f"evaluation.points: {point!r} is not an integer in 0..budget ({c.budget} "
               f"{c.budget_unit})")
    for point in c.snapshot_points:
        _check(isinstance(point, (int, np.integer)) and not isinstance(point, bool)
               and 0 <= point <= c.budget,
               f"snapshots.points: {point!r} is not an integer in 0..budget ({c.budget} "
               f"{c.budget_unit})")
    _check(isinstance(c.snapshot_log_points, (int, np.integer)) and c.snapshot_log_points >= 0,
           f"snapshots.log_points: {c.snapshot_log_points!r} is not a non-negative integer")
    if c.eval_train_examples is not None:
        _check(c.eval_train_examples > 0,
               f"evaluation.train_examples: {c.eval_train_examples!r} is not positive")
    if c.target_metric is not None or c.target_value is not None:
        _check(c.target_metric in TARGET_METRICS,
               f"target.metric: unknown metric {c.target_metric!r}; known: "
               f"{', '.join(TARGET_METRICS)}")
        _check(c.target_value is not None and math.isfinite(c.target_value),
               f"target.value: {c.target_value!r} must be a finite number")
    _check(not c.stop_at_target or c.target_metric is not None,
           "target.stop: true needs a target (target.metric and target.value)")
    _validate_grid(c.grid, c.optimizer, c.schedule)
    return c


def _validate_grid(g: Grid, optimizer: str, schedule: str) -> None:
    for h in HYPERPARAMETERS:
        values = getattr(g, h.name)
        _check(len(values) > 0, f"grid.{h.name}: empty list; give at least one value")
        _check(len(set(values)) == len(values), f"grid.{h.name}: duplicate values in {list(values)}")
        for v in values:
            _check(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                   and math.isfinite(v), f"grid.{h.name}: {v!r} is not a finite number")
            _check(h.valid(v), f"grid.{h.name}: {v!r} is not {h.requirement}")
        reason = unused_reason(h, optimizer, schedule)
        _check(len(values) == 1 or reason is None, f"grid.{h.name}: swept {list(values)} but {reason}")


def _validate_growth(c: SweepConfig, num_train: int | None) -> None:
    """A batch-size schedule: an integer factor ≥ 2 with increasing boundaries in (0, 1), at
    least one step in every stage, and every stage's batch within the training set."""
    _check(isinstance(c.batch_growth, (int, np.integer)) and not isinstance(c.batch_growth, bool)
           and c.batch_growth >= 1,
           f"training.batch_growth: {c.batch_growth!r} is not a positive integer")
    for b in c.growth_boundaries:
        _check(isinstance(b, (int, float, np.number)) and 0 < b < 1,
               f"training.growth_boundaries: {b!r} is not a fraction in (0, 1)")
    bounds = list(c.growth_boundaries)
    _check(bounds == sorted(set(bounds)),
           f"training.growth_boundaries: {bounds} must be strictly increasing")
    _check(c.batch_growth == 1 or bounds,
           f"training.batch_growth: {c.batch_growth} needs training.growth_boundaries (the "
           f"fractions of the budget where the batch grows)")
    _check(c.batch_growth >= 2 or not bounds,
           f"training.growth_boundaries: {bounds} given, but training.batch_growth is "
           f"{c.batch_growth}; set it to the factor (an integer ≥ 2)")
    if not bounds:
        return
    for b in c.batch_sizes:
        for s, stage in enumerate(c.stages(b)):
            _check(stage.num_steps > 0,
                   f"training.growth_boundaries: batch size {b}'s stage {s} (batch size "
                   f"{stage.batch_size}) gets no optimizer step of the {c.budget} "
                   f"{c.budget_unit}; move the boundaries or grow less")
            _check(num_train is None or stage.batch_size <= num_train,
                   f"training.batch_growth: batch size {b} grows to {stage.batch_size}, larger "
                   f"than the training set ({num_train} examples)")
