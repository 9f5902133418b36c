"""Batch-size schedules (``batch_growth``): stages, the step ↔ examples maps, a schedule run
against a hand-written loop over its stages, Adam's horizon per stage, interrupted resumes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsgd import Grid, SweepConfig, load_sweep, run_sweep
from jaxsgd.config import ConfigError, validate
from jaxsgd.engine.evaluation import eval_slots, evaluation_steps
from jaxsgd.engine.sharding import group_programs, replicate, to_host
from jaxsgd.engine.sweep import _open_sweep, chunk_length, train_specs
from jaxsgd.engine.training import examples_clock, run_keys
from jaxsgd.hyperparams import hparams
from jaxsgd.losses import task_for
from jaxsgd.models import make_model
from jaxsgd.optimizers import fixed_horizon

STAGE_TAG = 0x5354  # the documented root of the stage keys (jaxsgd.engine.sampling)


def config(**changes):
    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options={"width": 16, "depth": 1}, batch_sizes=(8,), budget=2000,
                eval_every=250, batch_growth=4, growth_boundaries=(0.5, 0.75),
                optimizer="momentum", schedule="step", decay_boundaries=(0.5, 0.75),
                grid=Grid(learning_rate=(0.1,), momentum=(0.9,), decay=(0.3,), seed=(0, 1)))
    base.update(changes)
    return SweepConfig(**base)


# ----------------------------------------------------------------------------- the stages


def test_stages_partition_the_budget_in_examples():
    c = config(budget=2**17, batch_growth=5, batch_sizes=(16,))
    stages = c.stages(16)
    assert [s.batch_size for s in stages] == [16, 80, 400]
    assert [s.first_step for s in stages] == [0, 4096, 4096 + 409]
    assert [s.num_steps for s in stages] == [4096, 409, 82]
    assert [s.first_example for s in stages] == [0, 65536, 65536 + 409 * 80]
    assert c.num_steps(16) == 4096 + 409 + 82
    # Each stage starts within one batch before its boundary, and the run within one batch
    # of the budget.
    for stage, before, bound in zip(stages[1:], stages, (0.5, 0.75)):
        assert 0 <= bound * c.budget - stage.first_example < before.batch_size
    assert 0 <= c.budget - c.examples_at(16, c.num_steps(16)) < stages[-1].batch_size


def test_steps_and_examples_maps_agree():
    c = config(budget=2**14, batch_sizes=(8,))
    points = np.arange(c.budget + 1)
    steps = c.steps_at(8, points)
    seen, after = c.examples_at(8, steps), c.examples_at(8, steps + 1)
    last = steps == c.num_steps(8)
    assert (seen <= points).all() and (points[~last] < after[~last]).all()
    assert np.all(np.diff(steps) >= 0) and steps[-1] == c.num_steps(8)
    # Without growth: ⌊p/B⌋ and t·B, as always.
    fixed = config(batch_growth=1, growth_boundaries=())
    np.testing.assert_array_equal(fixed.steps_at(8, points[:2001]), points[:2001] // 8)
    np.testing.assert_array_equal(fixed.examples_at(8, np.arange(251)), np.arange(251) * 8)
    # The in-program clock of the learning-rate schedule: examples seen over B₀.
    t = np.arange(c.num_steps(8) + 1)
    np.testing.assert_allclose(np.asarray(jax.vmap(partial_clock(c))(t)),
                               c.examples_at(8, t) / 8, rtol=1e-6)
    # In steps: the boundaries are steps, the examples follow the stages.
    s = config(budget=100, budget_unit="steps")
    assert [(st.first_step, st.num_steps) for st in s.stages(8)] == [(0, 50), (50, 25), (75, 25)]
    assert s.examples_at(8, 100) == 50 * 8 + 25 * 32 + 25 * 128


def partial_clock(c):
    stages = c.stages(c.batch_sizes[0])
    return lambda t: examples_clock(stages, t)


@pytest.mark.parametrize("changes, message", [
    (dict(growth_boundaries=()), r"training.batch_growth: 4 needs training.growth_boundaries"),
    (dict(batch_growth=1), r"training.growth_boundaries: \[0.5, 0.75\] given, but "
                           r"training.batch_growth is 1"),
    (dict(batch_growth=2.5), r"training.batch_growth: 2.5 is not a positive integer"),
    (dict(growth_boundaries=(0.75, 0.5)), r"must be strictly increasing"),
    (dict(growth_boundaries=(0.5, 1.0)), r"training.growth_boundaries: 1.0 is not a fraction"),
    (dict(growth_boundaries=(0.5, 0.99)), r"batch size 8's stage 2 \(batch size 128\) gets no "
                                          r"optimizer step"),
])
def test_bad_growth_is_a_config_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(config(**changes))


def test_growth_beyond_the_training_set_is_refused_before_compiling(mnist1d_small):
    with pytest.raises(ConfigError, match=r"batch size 64 grows to 1024, larger than the "
                                          r"training set \(800 examples\)"):
        run_sweep(config(batch_sizes=(64,), budget=2**14), data=mnist1d_small, progress=False)


def test_growth_in_toml_round_trips():
    c = config()
    d = c.to_dict()
    assert d["training"]["batch_growth"] == 4
    assert d["training"]["growth_boundaries"] == [0.5, 0.75]
    assert SweepConfig.from_dict(d) == c
    assert "batch_growth" not in config(batch_growth=1, growth_boundaries=()).to_dict()["training"]


# ----------------------------------------------------------------------------- the runs


def hand_run(c, data, seed):
    """The schedule run written out stage by stage: its minibatches from the documented keys,
    heavy-ball momentum at the step schedule's rate of the examples seen (as at B₀ throughout),
    θ and the train loss at each evaluation step."""
    model = make_model("mlp", data.input_shape, data.num_outputs, width=16, depth=1)
    loss = task_for(data.num_classes).loss
    k_init, k_data, _ = run_keys(seed)
    params = model.init(k_init)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n, b0 = x.shape[0], c.batch_sizes[0]
    lr0, m, decay = c.grid.learning_rate[0], c.grid.momentum[0], c.grid.decay[0]
    total = c.budget // b0  # the schedule's steps at B₀
    grad = jax.jit(jax.grad(lambda p, i: loss(model.apply(p, x[i]), y[i])))
    full = jax.jit(lambda p: loss(model.apply(p, x), y))
    velocity = jax.tree.map(jnp.zeros_like, params)
    eval_steps = set(c.steps_at(b0, np.arange(0, c.budget + 1, c.eval_every)).tolist())
    losses, t, seen = {}, 0, 0
    for s, stage in enumerate(c.stages(b0)):
        key = k_data if s == 0 else jax.random.fold_in(jax.random.fold_in(k_data, STAGE_TAG), s)
        per_epoch = n // stage.batch_size
        for j in range(stage.num_steps):
            if t in eval_steps:
                losses[t] = float(full(params))
            epoch, pos = divmod(j, per_epoch)
            if pos == 0:
                perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
            idx = perm[pos * stage.batch_size:(pos + 1) * stage.batch_size]
            passed = sum(seen / b0 >= bound * total for bound in c.decay_boundaries)
            lr = np.float32(lr0) * np.float32(decay) ** np.float32(passed)
            g = grad(params, idx)
            velocity = jax.tree.map(lambda v, gi: m * v + gi, velocity, g)
            params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
            t, seen = t + 1, seen + stage.batch_size
    losses[t] = float(full(params))
    return params, losses


def rel(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def along(metrics, name, batch_size=8):
    """A coordinate's values at one batch size (1-D when the sweep has one batch size)."""
    values = metrics[name]
    return (values.sel(batch_size=batch_size) if "batch_size" in values.dims else values).values


@pytest.fixture(scope="module")
def schedule_sweep():
    """Two seeds of the default schedule: B = 8, 32, 128 over 2000 examples, momentum, the
    learning rate decayed ×0.3 where the batch grows."""
    from jaxsgd.data import mnist1d

    data = mnist1d(num_samples=1000)
    return data, run_sweep(config(), data=data, progress=False)


def test_schedule_run_equals_its_stages_by_hand(schedule_sweep):
    """The sweep against its stages' programs run by hand, each on the state the previous one
    left: bitwise equal (the same compiled programs on the same spans)."""
    data, result = schedule_sweep
    c = config()
    sweep = _open_sweep(c, data=data, progress=False)
    specs = train_specs(c, 8, data.num_train)
    assert [s.batch_size for s in specs] == [8, 32, 128]
    slots, _ = eval_slots(evaluation_steps(c, 8), c.num_steps(8))
    state = None
    for spec in specs:
        programs = group_programs(spec, sweep.model, sweep.task, (), sweep.mesh,
                                  sweep.model_key)
        if state is None:
            state = programs.init(sweep.hparams, sweep.seeds, sweep.initial_params(), sweep.data)
        stage = spec.stages[spec.stage]
        chunk = chunk_length(stage.num_steps, None)
        for first in range(stage.first_step, stage.first_step + stage.num_steps, chunk):
            steps = np.arange(first, first + chunk)
            span = replicate((steps.astype(np.int32), slots[steps]), sweep.mesh)
            state = programs.advance(state, sweep.hparams, sweep.data, *span)
    state = to_host(programs.finish(state, sweep.hparams, sweep.data))
    for i, seed in enumerate(c.grid.seed):
        swept = result.run_params(8, seed=seed)
        for leaf, hand in zip(jax.tree.leaves(swept), jax.tree.leaves(state.params)):
            np.testing.assert_array_equal(leaf, hand[i])
        curve = result.metrics.train_loss.sel(batch_size=8, seed=seed).squeeze().values
        np.testing.assert_array_equal(curve, state.evals["train_loss"][i])


def test_schedule_run_follows_the_documented_rule(schedule_sweep):
    """The sweep against the schedule written out from its documentation (a separate
    program: float32 rounding differs, up to 1.1e-5 relative measured after 143 steps with
    momentum 0.9; one wrong minibatch or rate would differ by orders of magnitude more)."""
    mnist1d_small, result = schedule_sweep
    c = config()
    for seed in c.grid.seed:
        params, losses = hand_run(c, mnist1d_small, seed)
        swept = result.run_params(8, seed=seed)
        for leaf, hand in zip(jax.tree.leaves(swept), jax.tree.leaves(params)):
            assert rel(leaf, hand) < 1e-4
        curve = result.metrics.train_loss.sel(batch_size=8, seed=seed).squeeze()
        steps = along(result.metrics, "step")
        np.testing.assert_allclose(curve.values, [losses[t] for t in steps], rtol=1e-4)
    # Evaluations at the same examples as a fixed batch, labelled with their stage.
    m = result.metrics
    np.testing.assert_array_equal(m.examples.values, np.arange(0, 2001, 250))
    seen = c.examples_at(8, along(m, "step"))
    stage_sizes = along(m, "stage_batch_size")
    assert (seen <= m.examples.values).all()
    assert ((m.examples.values - seen) < stage_sizes).all()
    assert list(stage_sizes) == [8] * 4 + [32] * 2 + [128] * 3


def test_schedule_sweep_interrupted_mid_stage_resumes_bitwise(mnist1d_small, tmp_path,
                                                               monkeypatch):
    """Adam with β2 at a fixed half-life in examples, stopped inside stage 1 and resumed: equal
    to the uninterrupted sweep bitwise, and each stage's optimizer state carries its β2."""
    import jaxsgd.engine.sweep as sweep

    c = config(optimizer="adam", schedule="constant", horizon_batch_size=32,
               grid=Grid(learning_rate=(1e-3,), b2=(0.999,), seed=(0, 1)),
               snapshot_points=(500, 1250, 1750))
    stage = c.stages(8)[1]
    real = sweep.save_checkpoint

    def stop_inside_stage_1(path, host, header):
        real(path, host, header)
        if stage.first_step < header["next_step"] < stage.first_step + stage.num_steps:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "save_checkpoint", stop_inside_stage_1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(c, tmp_path / "r", data=mnist1d_small, chunk_steps=10, progress=False)
    assert not (tmp_path / "r" / "group_bs8.nc").exists()
    monkeypatch.setattr(sweep, "save_checkpoint", real)
    resumed = run_sweep(c, tmp_path / "r", data=mnist1d_small, chunk_steps=10, progress=False)
    straight = run_sweep(c, data=mnist1d_small, chunk_steps=10, progress=False)
    for x, y in zip(jax.tree.leaves(resumed.params[8]), jax.tree.leaves(straight.params[8])):
        np.testing.assert_array_equal(x, y)
    for name in ("train_loss", "test_accuracy", "batch_loss", "stage_batch_size"):
        np.testing.assert_array_equal(resumed.metrics[name], straight.metrics[name])
    np.testing.assert_array_equal(load_sweep(tmp_path / "r").metrics.train_loss,
                                  straight.metrics.train_loss)
    hp = hparams(b2=0.999)
    for point, size in zip((500, 1250, 1750), (8, 32, 128)):
        step = int(c.steps_at(8, [point])[0])
        for x, y in zip(jax.tree.leaves(resumed.run_params(8, step=step, seed=1)),
                        jax.tree.leaves(straight.run_params(8, step=step, seed=1))):
            np.testing.assert_array_equal(x, y)
        state = straight.snapshots[8][step]
        for x, y in zip(jax.tree.leaves(resumed.snapshots[8][step].state(state)),
                        jax.tree.leaves(state)):
            np.testing.assert_array_equal(x, y)
        got = np.asarray(state.opt_state.hyperparams["one_minus_b2"])
        want = float(fixed_horizon(hp, size, 32).one_minus_b2)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_loss_curves_name_the_stages(schedule_sweep):
    from jaxsgd.analysis.plotting import plot_loss_curves

    fig = plot_loss_curves(schedule_sweep[1])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["B = 8 → 32 → 128"]
    # Several sweeps on one axes: each named and coloured by the caller.
    fig = plot_loss_curves(schedule_sweep[1], x="step", label="growth", color="C3")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "growth (B = 8 → 32 → 128)"]
    assert fig.axes[0].get_lines()[0].get_color() == "C3"
    # The summary table names the schedule and each group's stages.
    from jaxsgd.analysis.summary import summarize

    table = summarize(schedule_sweep[1])
    assert "batch ×4 at 0.5, 0.75 of the budget" in table
    assert "8→32→128" in table
