"""One training run as pure functions: ``init``, ``advance`` over a span of steps, ``finish``.

``make_trainer(spec, ...)`` builds, from static configuration, the three pure functions of a
single run. The sweep engine (``jaxsgd.sweep``) vmaps them over the runs of a batch-size group
and jits them; each function here can also be called alone on one run, which is how the tests
compare a run taken out of a sweep with the same run trained on its own.

One optimizer step ``t`` (the scan body, ``train_step``):
1. minibatch indices from (run key, t)                      — ``jaxsgd.sampling``
2. if t is an evaluation step: metrics of θ_t on the fixed sets   — ``lax.cond`` (t unbatched)
3. minibatch loss and gradient at θ_t (with per-example gradient norms, fused, when a probe
   asks for them and the model's layers allow it — ``jaxsgd.per_example``)
4. probes due at t measure θ_t on the same minibatch             — ``lax.cond`` each
5. divergence check on the minibatch loss; a diverged run is frozen from here on
6. optimizer update θ_{t+1} = θ_t + u_t (optax), unless frozen (diverged, or stopped: with
   ``stop_metric`` a run freezes at the first evaluation that meets the target)

Evaluations land in fixed-size buffers in the carry (slot = index among evaluated steps), so a
run's outputs have static shapes and a scan chunk never depends on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsgd.evaluation import EvalData, evaluate
from jaxsgd.optimizers import HParams, make_optimizer
from jaxsgd.per_example import example_norms_method, value_grad_and_example_norms
from jaxsgd.probes import Probe, StepGradients, num_probe_points
from jaxsgd.sampling import SamplerState, init_sampler, sample_indices

PyTree = Any


@dataclass(frozen=True)
class TrainSpec:
    """Static description of the runs of one batch-size group."""

    batch_size: int
    num_steps: int
    num_train: int
    num_eval_slots: int
    optimizer: str = "sgd"
    schedule: str = "constant"
    decay_boundaries: tuple[float, ...] = (0.5, 0.75)
    sampling: str = "epoch"
    divergence_factor: float = 10.0
    eval_slice: int | None = 1024  # evaluation examples per slice (memory), None: all at once
    stop_metric: str | None = None  # freeze a run at the first evaluation meeting the target
    stop_value: float = 0.0


class TrainData(NamedTuple):
    """Device arrays shared by every run (passed unbatched): training set and evaluation sets."""

    x: jax.Array  # [N, *input_shape]
    y: jax.Array  # [N] or [N, K]
    eval: EvalData


class RunState(NamedTuple):
    """Carry of one run (leading [runs] axis on every leaf when vmapped).

    diverged_step is -1 until the run diverges; stopped turns true at the evaluation where the
    run met the stopping target (``TrainSpec.stop_metric``); loss_sum/loss_count accumulate
    minibatch losses since the last evaluation; evals maps metric name -> [num_eval_slots] float32 (NaN until
    written); probe_outputs[i] maps output name -> [num_probe_points, ...].
    """

    params: PyTree
    opt_state: PyTree
    sampler: SamplerState
    data_key: jax.Array  # raw key data (jax.random.key_data): every leaf is a plain array
    probe_key: jax.Array
    initial_loss: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array
    stopped: jax.Array
    loss_sum: jax.Array
    loss_count: jax.Array
    evals: dict[str, jax.Array]
    probe_states: tuple
    probe_outputs: tuple


class Trainer(NamedTuple):
    """Pure functions of one run.

    init(hparams, seed, params, data) -> RunState  — ``params``: the run's initial parameters,
        ``model_init(run_keys(seed)[0])``, made once per sweep and shared by every group
    advance(state, hparams, data, steps [S] int32, slots [S] int32) -> RunState
        runs optimizer steps ``steps`` (consecutive), with ``slots[i]`` the evaluation slot of
        ``steps[i]`` or -1. ``steps``/``slots`` must be unbatched when vmapped.
    finish(state, hparams, data) -> RunState  — evaluates θ_T into the last slot.
    loss_fn(params, batch) -> scalar mean loss on a minibatch ``(x, y)``.
    """

    init: Callable
    advance: Callable
    finish: Callable
    loss_fn: Callable


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
    """Build the pure per-run functions for one batch-size group (see ``Trainer``)."""

    def loss_fn(params, batch):
        x, y = batch
        return loss(model_apply(params, x), y)

    def optimizer(hp: HParams) -> optax.GradientTransformation:
        return make_optimizer(spec.optimizer, hp, spec.num_steps, spec.schedule,
                              spec.decay_boundaries)

    def minibatch(state: RunState, data: TrainData, step):
        sampler, idx = sample_indices(state.sampler, jax.random.wrap_key_data(state.data_key),
                                      step, spec.batch_size,
                                      spec.num_train, spec.sampling)
        return sampler, (data.x[idx], data.y[idx])

    def target_met(values: dict[str, jax.Array]) -> jax.Array:
        name = spec.stop_metric
        if name.endswith("_error"):
            return 1.0 - values[name.replace("_error", "_accuracy")] <= spec.stop_value
        if name.endswith("_accuracy"):
            return values[name] >= spec.stop_value
        return values[name] <= spec.stop_value

    def record_eval(state: RunState, data: TrainData, slot) -> RunState:
        values = evaluate(model_apply, metrics, state.params, data.eval, spec.eval_slice)
        values["batch_loss"] = state.loss_sum / state.loss_count  # NaN before the first step
        evals = {k: buf.at[slot].set(values[k]) for k, buf in state.evals.items()}
        stopped = state.stopped
        if spec.stop_metric is not None:
            stopped = stopped | target_met(values)
        return state._replace(evals=evals, stopped=stopped,
                              loss_sum=jnp.zeros_like(state.loss_sum),
                              loss_count=jnp.zeros_like(state.loss_count))

    wants_norms = any(p.step_gradients for p in probes)

    population = spec.num_train if spec.sampling == "epoch" else None

    def step_gradients(params, batch) -> StepGradients:
        """Minibatch loss and gradient; per-example norms too when fused at almost no cost."""
        if wants_norms and example_norms_method(loss_fn, params, batch) == "layers":
            loss_value, grads, norms = value_grad_and_example_norms(loss_fn, params, batch,
                                                                    "layers")
            return StepGradients(loss_value, grads, norms, population)
        loss_value, grads = jax.value_and_grad(loss_fn)(params, batch)
        return StepGradients(loss_value, grads, None, population)

    def measure(probe, params, opt_state, batch, key, step, pstate, gradients):
        extra = {"gradients": gradients} if probe.step_gradients else {}
        return probe.measure(loss_fn, params, opt_state, batch, key, step, pstate, **extra)

    def init(hp: HParams, seed, params: PyTree, data: TrainData) -> RunState:
        _, k_data, k_probe = run_keys(seed)
        batch = (data.x[: spec.batch_size], data.y[: spec.batch_size])
        grad_shapes = jax.eval_shape(lambda p, b: step_gradients(p, b)[:3], params, batch)
        eval_shapes = jax.eval_shape(lambda p: evaluate(model_apply, metrics, p, data.eval), params)
        evals = {k: jnp.full((spec.num_eval_slots,), jnp.nan, jnp.float32)
                 for k in (*eval_shapes, "batch_loss")}
        opt_state = optimizer(hp).init(params)
        probe_states, probe_outputs = [], []
        for i, probe in enumerate(probes):
            pstate = probe.init(params, jax.random.fold_in(k_probe, i))
            shapes = jax.eval_shape(
                lambda ps, g: measure(probe, params, opt_state, batch, k_probe, 0, ps,
                                      StepGradients(*g, population))[1],
                pstate, grad_shapes)
            n = num_probe_points(spec.num_steps, probe.every)
            probe_states.append(pstate)
            probe_outputs.append({k: jnp.full((n, *s.shape), _missing(s.dtype), s.dtype)
                                  for k, s in shapes.items()})
        return RunState(
            params=params, opt_state=opt_state,
            sampler=init_sampler(spec.num_train, spec.sampling),
            data_key=jax.random.key_data(k_data), probe_key=jax.random.key_data(k_probe),
            initial_loss=jnp.float32(jnp.nan), diverged=jnp.bool_(False),
            diverged_step=jnp.int32(-1), stopped=jnp.bool_(False), loss_sum=jnp.float32(0.0),
            loss_count=jnp.float32(0.0),
            evals=evals, probe_states=tuple(probe_states), probe_outputs=tuple(probe_outputs))

    def run_probes(state: RunState, batch, step, gradients: StepGradients):
        states, outputs = list(state.probe_states), list(state.probe_outputs)
        for i, probe in enumerate(probes):
            def measured(pstate, pout, probe=probe, i=i):
                run_key = jax.random.wrap_key_data(state.probe_key)
                key = jax.random.fold_in(jax.random.fold_in(run_key, i), step)
                pstate, values = measure(probe, state.params, state.opt_state, batch, key,
                                         step, pstate, gradients)
                slot = step // probe.every
                return pstate, {k: buf.at[slot].set(values[k]) for k, buf in pout.items()}

            states[i], outputs[i] = jax.lax.cond(
                step % probe.every == 0, measured, lambda s, o: (s, o), states[i], outputs[i])
        return state._replace(probe_states=tuple(states), probe_outputs=tuple(outputs))

    def train_step(hp: HParams, data: TrainData, state: RunState, step, slot) -> RunState:
        sampler, batch = minibatch(state, data, step)
        state = state._replace(sampler=sampler)
        state = jax.lax.cond(slot >= 0, lambda s: record_eval(s, data, slot), lambda s: s, state)
        gradients = step_gradients(state.params, batch)
        loss_value, grads = gradients.loss, gradients.grads
        if probes:
            state = run_probes(state, batch, step, gradients)
        initial = jnp.where(step == 0, loss_value, state.initial_loss)
        bad = ~jnp.isfinite(loss_value) | (loss_value > spec.divergence_factor * initial)
        bad = bad & ~state.stopped
        diverged = state.diverged | bad
        frozen = diverged | state.stopped
        updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jnp.where(frozen, old, new)  # freeze a diverged/stopped run
        live = (~diverged).astype(jnp.float32)
        return state._replace(
            params=jax.tree.map(keep, params, state.params),
            opt_state=jax.tree.map(keep, opt_state, state.opt_state),
            initial_loss=initial,
            diverged=diverged,
            diverged_step=jnp.where(bad & ~state.diverged, step, state.diverged_step),
            loss_sum=state.loss_sum + jnp.where(diverged, 0.0, loss_value),
            loss_count=state.loss_count + live,
        )

    def advance(state: RunState, hp: HParams, data: TrainData, steps, slots) -> RunState:
        def body(carry, xs):
            return train_step(hp, data, carry, *xs), None

        state, _ = jax.lax.scan(body, state, (steps, slots))
        return state

    def finish(state: RunState, hp: HParams, data: TrainData) -> RunState:
        del hp
        return record_eval(state, data, spec.num_eval_slots - 1)

    return Trainer(init=init, advance=advance, finish=finish, loss_fn=loss_fn)
