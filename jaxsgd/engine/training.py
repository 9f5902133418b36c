"""One training run as pure functions: ``init``, ``advance`` over a span of steps, ``finish``.

``make_trainer(spec, ...)`` builds, from static configuration, the three pure functions of a
single run. The sweep engine (``jaxsgd.engine.sweep``) vmaps them over the runs of a batch-size group
and jits them; each function here can also be called alone on one run, which is how the tests
compare a run taken out of a sweep with the same run trained on its own.

One optimizer step ``t`` (the scan body, ``train_step``):
1. minibatch indices from (run key, t)                      — ``jaxsgd.engine.sampling``
2. if t is an evaluation step: metrics of θ_t on the fixed sets   — ``lax.cond`` (t unbatched)
3. minibatch loss and gradient at θ_t (with per-example gradient norms, fused, when a probe
   asks for them and no parameter needs ``vmap(grad)`` — ``jaxsgd.measure.per_example``)
4. probes due at t measure θ_t on the same minibatch             — ``lax.cond`` each
5. divergence check on a running average of minibatch losses over a fixed number of examples
   (``jaxsgd.engine.monitor``; loss spikes counted); a diverged run is frozen from here on
6. optimizer update θ_{t+1} = θ_t + u_t (optax), unless frozen (diverged, or stopped: with
   ``stop_metric`` a run freezes at the first evaluation that meets the target)

A batch-size schedule (``TrainSpec.stages``) runs each stage with its own ``Group`` (its batch
size, its sampling key, steps counted from its first step) on the state the previous stage
left; the step count, evaluation slots and probe buffers are the whole run's.

Evaluations land in fixed-size buffers in the carry (slot = index among evaluated steps), so a
run's outputs have static shapes and a scan chunk never depends on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsgd.config import Stage
from jaxsgd.engine.evaluation import EvalData, evaluate
from jaxsgd.engine.monitor import LossMonitor, decay, init_monitor, new_interval, observe
from jaxsgd.engine.sampling import SamplerState, init_sampler, sample_indices, stage_key
from jaxsgd.hyperparams import HParams
from jaxsgd.measure.per_example import fused_norms
from jaxsgd.optimizers import fixed_horizon, make_optimizer, scaled_learning_rate
from jaxsgd.probes.base import Probe, StepGradients, num_probe_points
from jaxsgd.targets import metric_values, target_direction, target_reached

PyTree = Any


@dataclass(frozen=True)
class TrainSpec:
    """Static description of the runs of one batch-size group — of one stage of it, when the
    group's batch grows in ``stages`` (``jaxsgd.config.SweepConfig.stages``): ``batch_size`` is
    then stage ``stage``'s, while ``num_steps``, the evaluation slots and the probe buffers are
    the whole run's, so that the run state passes from stage to stage unchanged."""

    batch_size: int
    num_steps: int
    num_train: int
    num_eval_slots: int
    optimizer: str = "sgd"
    schedule: str = "constant"
    decay_boundaries: tuple[float, ...] = (0.5, 0.75)
    sampling: str = "epoch"
    divergence_factor: float = 10.0
    divergence_horizon: float = 256.0  # examples averaged by the divergence rule (monitor)
    spike_factor: float = 3.0  # a minibatch loss above this multiple of the average: a spike
    accumulation: int = 1  # microbatches per step (memory ∝ batch_size / accumulation)
    horizon_batch_size: int | None = None  # Adam's β2 (β1 too: horizon_b1) given at this B
    horizon_b1: bool = False
    lr_scaling: str = "none"  # the grid's rate is given at lr_batch_size, scaled to batch_size
    lr_batch_size: int | None = None
    eval_slice: int | None = 1024  # evaluation examples per slice (memory), None: all at once
    stop_metric: str | None = None  # freeze a run at the first evaluation meeting the target
    stop_value: float = 0.0
    stages: tuple[Stage, ...] = ()  # a batch-size schedule (empty: batch_size throughout)
    stage: int = 0  # the stage this spec runs
    clock_steps: int = 0  # > 0: the learning-rate schedule follows examples seen (below)

    @property
    def first_step(self) -> int:
        """The global step at which this stage starts (0 without stages)."""
        return self.stages[self.stage].first_step if self.stages else 0


class TrainData(NamedTuple):
    """Device arrays shared by every run (passed unbatched): training set and evaluation sets.

    Examples are addressed by index: ``batch(idx)`` is the minibatch of examples ``idx``. Here an
    example is a row of ``x`` and ``y``; a data set sampled differently (windows of a long token
    sequence) provides the same method, and the sampler and the step stay as they are.
    """

    x: jax.Array  # [N, *input_shape]
    y: jax.Array  # [N] or [N, K]
    eval: EvalData

    def batch(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The minibatch ``(x [B, ...], y [B, ...])`` of examples ``idx`` [B]."""
        return self.x[idx], self.y[idx]


class RunState(NamedTuple):
    """Carry of one run (leading [runs] axis on every leaf when vmapped).

    diverged_step is -1 until the run diverges (``jaxsgd.engine.monitor``: monitor holds the
    running average of minibatch losses that decides it, and the current interval's peak and
    spike count); stopped turns true at the evaluation where the run met the stopping target
    (``TrainSpec.stop_metric``); loss_sum/loss_count accumulate minibatch losses since the last
    evaluation; evals maps metric name -> [num_eval_slots] float32 (NaN until
    written); probe_outputs[i] maps output name -> [num_probe_points, ...].
    """

    params: PyTree
    opt_state: PyTree
    sampler: SamplerState
    data_key: jax.Array  # raw key data (jax.random.key_data): every leaf is a plain array
    probe_key: jax.Array
    monitor: LossMonitor
    diverged: jax.Array
    diverged_step: jax.Array
    stopped: jax.Array
    loss_sum: jax.Array
    loss_count: jax.Array
    evals: dict[str, jax.Array]
    probe_states: tuple
    probe_outputs: tuple


class Trainer(NamedTuple):
    """Pure functions of one run (``make_trainer``; each is a module-level function of this
    module with the group's static ``Group`` bound).

    init(hparams, seed, params, data) -> RunState  — ``params``: the run's initial parameters,
        ``model_init(run_keys(seed)[0])``, made once per sweep and shared by every group
    advance(state, hparams, data, steps [S] int32, slots [S] int32) -> RunState
        runs optimizer steps ``steps`` (consecutive), with ``slots[i]`` the evaluation slot of
        ``steps[i]`` or -1. ``steps``/``slots`` must be unbatched when vmapped.
    finish(state, hparams, data) -> RunState  — evaluates θ_T into the last slot (bound to
        the group's ``Evaluation`` alone: the same function at every batch size).
    """

    init: Callable
    advance: Callable
    finish: Callable


@dataclass(frozen=True)
class Group:
    """The static pieces shared by the runs of one batch-size group: the spec, the model's
    functions, the loss and metrics of its task, and the probes."""

    spec: TrainSpec
    model_init: Callable[[jax.Array], PyTree]
    model_apply: Callable[[PyTree, jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
    probes: tuple[Probe, ...] = ()

    def loss_fn(self, params: PyTree, batch) -> jax.Array:
        """Mean loss on a minibatch ``(x, y)``: the ``loss_fn(params, batch)`` of every measure."""
        x, y = batch
        return self.loss(self.model_apply(params, x), y)

    @property
    def wants_norms(self) -> bool:
        """Whether a probe asks for the step's per-example gradient norms."""
        return any(p.step_gradients for p in self.probes)

    @property
    def norm_leaves(self) -> str | None:
        """The leaves whose per-example norms the probes need: a regular expression on the
        leaf paths, or None for every leaf."""
        patterns = {p.example_leaves for p in self.probes if p.step_gradients}
        if None in patterns:
            return None
        return "|".join(f"(?:{pattern})" for pattern in sorted(patterns))

    @property
    def population(self) -> int | None:
        """N for the finite-data correction under epoch sampling; None with replacement."""
        return self.spec.num_train if self.spec.sampling == "epoch" else None

    @property
    def evaluation(self) -> Evaluation:
        """What an evaluation of this group's runs reads (the same for every batch size)."""
        spec = self.spec
        return Evaluation(self.model_apply, self.metrics, spec.num_eval_slots, spec.eval_slice,
                          spec.stop_metric, spec.stop_value)


@dataclass(frozen=True)
class Evaluation:
    """The static pieces of a run's evaluation (``record_eval``, ``finish``): the model's
    outputs and the task's metrics on the fixed sets, the slots, the slice size and the stopping
    target. Nothing here depends on the batch size, so every group of a sweep ends with one
    program (``jaxsgd.engine.sharding.group_programs``)."""

    model_apply: Callable[[PyTree, jax.Array], jax.Array]
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
    num_eval_slots: int
    eval_slice: int | None = 1024
    stop_metric: str | None = None
    stop_value: float = 0.0


def run_keys(seed) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The keys of the run with this seed: (initialisation, minibatch order, probes).

    This is the whole randomness contract: the same seed gives the same initial parameters
    and minibatch sequence at every learning rate (common random numbers across the grid).
    """
    k_init, k_data, k_probe = jax.random.split(jax.random.key(seed), 3)
    return k_init, k_data, k_probe


def initial_params(model_init: Callable[[jax.Array], PyTree], seed) -> PyTree:
    """Initial parameters of the run with this seed."""
    return model_init(run_keys(seed)[0])


def _missing(dtype) -> Any:
    """Fill value of a not-yet-written output: NaN for floats, 0 otherwise."""
    return jnp.nan if jnp.issubdtype(dtype, jnp.inexact) else 0


def make_trainer(
    spec: TrainSpec,
    model_init: Callable[[jax.Array], PyTree],
    model_apply: Callable[[PyTree, jax.Array], jax.Array],
    loss: Callable[[jax.Array, jax.Array], jax.Array],
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]],
    probes: tuple[Probe, ...] = (),
) -> Trainer:
    """The pure per-run functions of one batch-size group (see ``Trainer``)."""
    group = Group(spec, model_init, model_apply, loss, metrics, tuple(probes))
    return Trainer(init=partial(init_run, group), advance=partial(advance, group),
                   finish=partial(finish, group.evaluation))


def optimizer(group: Group, hp: HParams) -> optax.GradientTransformation:
    """The run's optax optimizer, built from its traced hyperparameters (Adam's β2, and β1
    with ``horizon_b1``, rescaled to this batch size when ``horizon_batch_size`` is set:
    ``jaxsgd.optimizers.fixed_horizon``).

    The peak learning rate is the grid's, or with ``lr_scaling`` the grid's scaled from
    ``lr_batch_size`` to this batch size (``jaxsgd.optimizers.scaled_learning_rate``).
    The learning-rate schedule runs over the optimizer's step count and ``num_steps`` — or,
    with ``clock_steps`` (a batch-size schedule with a budget in examples), over the examples
    seen in steps of the first stage's batch size, E(t)/B₀, and ``clock_steps`` = budget // B₀:
    the schedule of a run at B₀ throughout, at the same examples.
    """
    spec = group.spec
    if spec.horizon_batch_size is not None:
        hp = fixed_horizon(hp, spec.batch_size, spec.horizon_batch_size, b1=spec.horizon_b1)
    if spec.lr_scaling != "none":
        hp = scaled_learning_rate(hp, spec.batch_size, spec.lr_batch_size, spec.lr_scaling)
    if spec.clock_steps:
        return make_optimizer(spec.optimizer, hp, spec.clock_steps, spec.schedule,
                              spec.decay_boundaries, clock=partial(examples_clock, spec.stages))
    return make_optimizer(spec.optimizer, hp, spec.num_steps, spec.schedule,
                          spec.decay_boundaries)


def examples_clock(stages: tuple[Stage, ...], count) -> jax.Array:
    """Examples seen before step ``count`` of a run in ``stages``, in steps of the first
    stage's batch size: Σ_s B_s·clip(t − T_s, 0, n_s) / B₀ (float32; the last stage unclipped)."""
    t = jnp.asarray(count, jnp.float32)
    seen = jnp.float32(0.0)
    for i, st in enumerate(stages):
        span = jnp.maximum(t - st.first_step, 0.0)
        if i < len(stages) - 1:
            span = jnp.minimum(span, st.num_steps)
        seen = seen + span * (st.batch_size / stages[0].batch_size)
    return seen


def with_stage_hyperparams(group: Group, state: RunState, hp: HParams) -> RunState:
    """The run entering a later stage of a batch-size schedule with Adam's β at a fixed
    half-life in examples: the β values injected into the optimizer state (fixed at ``init``)
    replaced by this stage's. The learning rate is recomputed from the step count anyway."""
    fresh = optimizer(group, hp).init(state.params)
    hyper = dict(state.opt_state.hyperparams)
    hyper.update({k: v for k, v in fresh.hyperparams.items() if k != "learning_rate"})
    return state._replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def minibatch(group: Group, state: RunState, data: TrainData, step):
    """The sampler's next state and the minibatch of optimizer step ``step`` (of a schedule's
    stage: the stage's key, the step counted from its start: ``jaxsgd.engine.sampling``)."""
    spec = group.spec
    key = stage_key(jax.random.wrap_key_data(state.data_key), spec.stage)
    sampler, idx = sample_indices(state.sampler, key, step - spec.first_step, spec.batch_size,
                                  spec.num_train, spec.sampling)
    return sampler, data.batch(idx)


def record_eval(ev: Evaluation, state: RunState, data: TrainData, slot) -> RunState:
    """Evaluate θ into evaluation slot ``slot``; with a stopping target, stop a run meeting it."""
    values = evaluate(ev.model_apply, ev.metrics, state.params, data.eval, ev.eval_slice)
    values["batch_loss"] = state.loss_sum / state.loss_count  # NaN before the first step
    values["batch_loss_max"] = state.monitor.peak  # NaN before the first step
    values["batch_loss_spikes"] = state.monitor.spikes
    evals = {k: buf.at[slot].set(values[k]) for k, buf in state.evals.items()}
    stopped = state.stopped
    if ev.stop_metric is not None:
        stopped = stopped | target_reached(metric_values(values, ev.stop_metric),
                                           ev.stop_value, target_direction(ev.stop_metric))
    monitor = new_interval(state.monitor)  # the first evaluation (θ_0) gives its reference
    monitor = monitor._replace(reference=jnp.where(slot == 0, values["train_loss"],
                                                   monitor.reference))
    return state._replace(evals=evals, stopped=stopped, monitor=monitor,
                          loss_sum=jnp.zeros_like(state.loss_sum),
                          loss_count=jnp.zeros_like(state.loss_count))


def step_gradients(group: Group, params: PyTree, batch) -> StepGradients:
    """Minibatch loss and gradient; per-example norms too when fused at almost no cost. With
    ``accumulation`` = k the B examples go through as k microbatches of B/k (a ``lax.scan``:
    activations for B/k examples at a time), whose mean loss and gradient are the batch's."""
    loss_fn, k = group.loss_fn, group.spec.accumulation
    norms_of = (fused_norms(loss_fn, params, _first(batch, k), group.norm_leaves)
                if group.wants_norms else None)

    def one(part):
        if norms_of is not None:
            return norms_of(params, part)
        return (*jax.value_and_grad(loss_fn)(params, part), None)

    if k == 1:
        loss_value, grads, norms = one(batch)
    else:
        parts = jax.tree.map(lambda a: a.reshape(k, a.shape[0] // k, *a.shape[1:]), batch)

        def add(total, part):
            loss_value, grads, norms = one(part)
            return jax.tree.map(jnp.add, total, (loss_value, grads)), norms

        zero = jax.tree.map(jnp.zeros_like, (jnp.float32(0.0), params))
        (loss_value, grads), norms = jax.lax.scan(add, zero, parts)
        loss_value, grads = jax.tree.map(lambda x: x / k, (loss_value, grads))
        norms = None if norms is None else jax.tree.map(lambda n: n.reshape(-1), norms)
    return StepGradients(loss_value, grads, norms, group.population)


def _first(batch, k: int):
    """The first of ``k`` microbatches (shapes only matter: what the step differentiates)."""
    return jax.tree.map(lambda a: a[:a.shape[0] // k], batch)


def measure(group: Group, probe: Probe, params, opt_state, batch, key, step, pstate, gradients):
    """One probe's measurement (the step's gradients handed over if it asks for them)."""
    extra = {"gradients": gradients} if probe.step_gradients else {}
    return probe.measure(group.loss_fn, params, opt_state, batch, key, step, pstate, **extra)


def init_run(group: Group, hp: HParams, seed, params: PyTree, data: TrainData) -> RunState:
    """The state of a run before its first step: optimizer and probe states, empty buffers."""
    spec = group.spec
    _, k_data, k_probe = run_keys(seed)
    batch = data.batch(jnp.arange(spec.batch_size))
    grad_shapes = jax.eval_shape(lambda p, b: step_gradients(group, p, b)[:3], params, batch)
    eval_shapes = jax.eval_shape(
        lambda p: evaluate(group.model_apply, group.metrics, p, data.eval), params)
    evals = {k: jnp.full((spec.num_eval_slots,), jnp.nan, jnp.float32)
             for k in (*eval_shapes, "batch_loss", "batch_loss_max", "batch_loss_spikes")}
    opt_state = optimizer(group, hp).init(params)
    probe_states, probe_outputs = [], []
    for i, probe in enumerate(group.probes):
        pstate = probe.init(params, jax.random.fold_in(k_probe, i))
        shapes = jax.eval_shape(
            lambda ps, g: measure(group, probe, params, opt_state, batch, k_probe, 0, ps,
                                  StepGradients(*g, group.population))[1],
            pstate, grad_shapes)
        n = num_probe_points(spec.num_steps, probe.every)
        probe_states.append(pstate)
        probe_outputs.append({k: jnp.full((n, *s.shape), _missing(s.dtype), s.dtype)
                              for k, s in shapes.items()})
    return RunState(
        params=params, opt_state=opt_state,
        sampler=init_sampler(spec.num_train, spec.sampling),
        data_key=jax.random.key_data(k_data), probe_key=jax.random.key_data(k_probe),
        monitor=init_monitor(), diverged=jnp.bool_(False),
        diverged_step=jnp.int32(-1), stopped=jnp.bool_(False), loss_sum=jnp.float32(0.0),
        loss_count=jnp.float32(0.0),
        evals=evals, probe_states=tuple(probe_states), probe_outputs=tuple(probe_outputs))


def run_probes(group: Group, state: RunState, batch, step, gradients: StepGradients) -> RunState:
    """Every probe due at ``step`` measures θ_t (a ``lax.cond`` branch each: ``step`` is
    unbatched, so under vmap it is taken only when due)."""
    states, outputs = list(state.probe_states), list(state.probe_outputs)
    for i, probe in enumerate(group.probes):
        def measured(pstate, pout, probe=probe, i=i):
            run_key = jax.random.wrap_key_data(state.probe_key)
            key = jax.random.fold_in(jax.random.fold_in(run_key, i), step)
            pstate, values = measure(group, probe, state.params, state.opt_state, batch, key,
                                     step, pstate, gradients)
            slot = step // probe.every
            return pstate, {k: buf.at[slot].set(values[k]) for k, buf in pout.items()}

        states[i], outputs[i] = jax.lax.cond(
            step % probe.every == 0, measured, lambda s, o: (s, o), states[i], outputs[i])
    return state._replace(probe_states=tuple(states), probe_outputs=tuple(outputs))


def train_step(group: Group, hp: HParams, data: TrainData, state: RunState, step,
               slot) -> RunState:
    """One optimizer step of one run (the scan body; steps 1-6 of the module docstring)."""
    spec = group.spec
    sampler, batch = minibatch(group, state, data, step)
    state = state._replace(sampler=sampler)
    state = jax.lax.cond(slot >= 0, lambda s: record_eval(group.evaluation, s, data, slot),
                         lambda s: s, state)
    gradients = step_gradients(group, state.params, batch)
    loss_value, grads = gradients.loss, gradients.grads
    if group.probes:
        state = run_probes(group, state, batch, step, gradients)
    monitor, bad = observe(state.monitor, loss_value,
                           d=decay(spec.batch_size, spec.divergence_horizon),
                           factor=spec.divergence_factor, spike_factor=spec.spike_factor)
    was_frozen = state.diverged | state.stopped
    bad = bad & ~was_frozen
    diverged = state.diverged | bad
    frozen = diverged | state.stopped
    updates, opt_state = optimizer(group, hp).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(frozen, old, new)  # freeze a diverged/stopped run
    live = (~diverged).astype(jnp.float32)
    return state._replace(
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        monitor=jax.tree.map(lambda new, old: jnp.where(was_frozen, old, new), monitor,
                             state.monitor),
        diverged=diverged,
        diverged_step=jnp.where(bad & ~state.diverged, step, state.diverged_step),
        loss_sum=state.loss_sum + jnp.where(diverged, 0.0, loss_value),
        loss_count=state.loss_count + live,
    )


def advance(group: Group, state: RunState, hp: HParams, data: TrainData, steps,
            slots) -> RunState:
    """Optimizer steps ``steps`` [S] (consecutive; ``slots`` [S]: evaluation slot or −1) as one
    ``lax.scan``."""
    if group.spec.stage > 0 and group.spec.horizon_batch_size is not None:
        state = with_stage_hyperparams(group, state, hp)  # idempotent: any span of the stage

    def body(carry, xs):
        return train_step(group, hp, data, carry, *xs), None

    state, _ = jax.lax.scan(body, state, (steps, slots))
    return state


def finish(ev: Evaluation, state: RunState, hp: HParams, data: TrainData) -> RunState:
    """Evaluate θ_T into the last evaluation slot."""
    del hp
    return record_eval(ev, state, data, ev.num_eval_slots - 1)
