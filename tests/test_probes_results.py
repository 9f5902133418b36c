"""Probes inside the scan, steps-to-target, and results folders (save, load, interruption)."""

import json
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsgd
from jaxsgd import Grid, SweepConfig, load_sweep, run_sweep, steps_to_target
from jaxsgd.losses import cross_entropy, task_for
from jaxsgd.models import make_model
from jaxsgd.engine.sweep import train_data, train_spec
from jaxsgd.engine.training import initial_params, make_trainer
from jaxsgd.hyperparams import hparams



def config(**changes):
    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options={"width": 32, "depth": 2}, batch_sizes=(16, 64), budget=20,
                budget_unit="steps", eval_every=10, grid=Grid(learning_rate=(0.05, 0.2), seed=(0,)))
    base.update(changes)
    return SweepConfig(**base)


# ----------------------------------------------------------------------------- steps_to_target


def test_steps_to_target_on_known_trajectories():
    steps = np.array([0, 10, 20, 30, 40])
    curves = np.array([
        [0.9, 0.7, 0.5, 0.3, 0.1],     # crosses 0.4 at step 30
        [0.9, 0.4, 0.5, 0.3, 0.1],     # touches 0.4 at step 10 (<= counts)
        [0.9, 0.8, 0.7, 0.6, 0.5],     # never
        [0.9, np.nan, np.nan, 0.1, 0.1],  # NaN is not reached
        [0.3, 0.3, 0.3, 0.3, 0.3],     # at the start
    ])
    np.testing.assert_array_equal(steps_to_target(curves, steps, 0.4),
                                  [30, 10, np.inf, 30, 0])
    diverged = np.array([False, True, False, False, False])
    np.testing.assert_array_equal(steps_to_target(curves, steps, 0.4, diverged=diverged),
                                  [30, np.inf, np.inf, 30, 0])
    # accuracies: reached when >= value
    np.testing.assert_array_equal(steps_to_target(1 - curves, steps, 0.6, "max"),
                                  [30, 10, np.inf, 30, 0])
    with pytest.raises(ValueError, match="direction"):
        steps_to_target(curves, steps, 0.4, "down")


# ----------------------------------------------------------------------------- probes


def test_gradient_norm_probe_matches_direct_computation(mnist1d_small):
    probe = jaxsgd.gradient_norm(every=5)
    c = config(batch_sizes=(16,), grid=Grid(learning_rate=(0.1,), seed=(3,)))
    m = run_sweep(c, data=mnist1d_small, probes=(probe,)).metrics
    assert list(m.gradient_norm_step.values) == [0, 5, 10, 15]
    run = m.sel(batch_size=16, learning_rate=0.1, seed=3)
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    # Step 0: the probe's gradient and parameter norms from first principles.
    k_init, k_data, _ = jax.random.split(jax.random.key(3), 3)
    params0 = model.init(k_init)
    idx = jax.random.permutation(jax.random.fold_in(k_data, 0), 800)[:16]
    x, y = jnp.asarray(mnist1d_small.x_train)[idx], jnp.asarray(mnist1d_small.y_train)[idx]
    g = jax.grad(lambda p: cross_entropy(model.apply(p, x), y))(params0)
    assert float(run.gradient_norm_grad_norm[0]) == pytest.approx(float(optax.tree.norm(g)),
                                                                   rel=1e-5)
    assert float(run.gradient_norm_param_norm[0]) == pytest.approx(
        float(optax.tree.norm(params0)), rel=1e-6)


def test_probe_stays_a_branch_under_vmap(mnist1d_small):
    """The probe's cond must survive vmap as a cond (taken once every k steps), not a select."""
    c = config(batch_sizes=(16,))
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    task = task_for(10)
    spec = train_spec(c, 16, mnist1d_small.num_train)
    trainer = make_trainer(spec, model.init, model.apply, task.loss, task.metrics,
                           (jaxsgd.gradient_norm(4),))
    data = train_data(c, mnist1d_small)
    hp = jax.tree.map(lambda v: jnp.full((2,), v), hparams(learning_rate=0.1, momentum=0.9))
    seeds = jnp.arange(2)
    params = jax.vmap(partial(initial_params, model.init))(seeds)
    state = jax.vmap(trainer.init, in_axes=(0, 0, 0, None))(hp, seeds, params, data)
    steps, slots = jnp.arange(8, dtype=jnp.int32), -jnp.ones((8,), jnp.int32)
    jaxpr = jax.make_jaxpr(jax.vmap(trainer.advance, in_axes=(0, 0, None, None, None)))(
        state, hp, data, steps, slots)
    text = str(jaxpr)
    # conds: epoch reshuffle, evaluation, probe; none turned into a select over branches.
    assert text.count("cond[") >= 3


def test_probe_state_carries_between_measurements(mnist1d_small):
    def init(params, key):
        return jnp.int32(0)

    def measure(loss_fn, params, opt_state, batch, key, step, count):
        return count + 1, {"count": count + 1, "at": jnp.float32(step)}

    counter = jaxsgd.Probe(name="counter", every=3, init=init, measure=measure)
    m = run_sweep(config(batch_sizes=(16,)), data=mnist1d_small, probes=(counter,)).metrics
    np.testing.assert_array_equal(m.counter_count.isel(batch_size=0, learning_rate=0, seed=0),
                                  [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(m.counter_at.isel(batch_size=0, learning_rate=0, seed=0),
                                  [0, 3, 6, 9, 12, 15, 18])


# ----------------------------------------------------------------------------- results folders


def test_results_folder_round_trip(mnist1d_small, tmp_path):
    c = config(target_metric="train_loss", target_value=2.2)
    result = run_sweep(c, tmp_path / "r", data=mnist1d_small)
    loaded = load_sweep(tmp_path / "r")
    assert loaded.config == c
    assert loaded.metrics.attrs["complete"] == 1
    for name in ("test_loss", "train_accuracy", "diverged", "steps_to_target", "run"):
        np.testing.assert_array_equal(loaded.metrics[name].values, result.metrics[name].values)
    for b in c.batch_sizes:
        for x, y in zip(jax.tree.leaves(result.params[b]), jax.tree.leaves(loaded.params[b])):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(
        jax.tree.leaves(loaded.run_params(64, learning_rate=0.2, seed=0))[0],
        jax.tree.leaves(result.params[64])[0][1])


def test_existing_results_folder_is_never_silently_overwritten(mnist1d_small, tmp_path):
    out = tmp_path / "r"
    run_sweep(config(batch_sizes=(16,)), out, data=mnist1d_small)
    before = (out / "group_bs16.nc").read_bytes()
    with pytest.raises(FileExistsError, match=r"different sweep \(training.budget is 30 here"):
        run_sweep(config(batch_sizes=(16,), budget=30), out, data=mnist1d_small)
    shifted = mnist1d_small._replace(x_train=mnist1d_small.x_train + 1.0)
    with pytest.raises(FileExistsError, match="data: its arrays differ"):
        run_sweep(config(batch_sizes=(16,)), out, data=shifted)
    assert (out / "group_bs16.nc").read_bytes() == before
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a jaxsgd results folder"):
        run_sweep(config(batch_sizes=(16,)), other, data=mnist1d_small, overwrite=True)
    assert (other / "notes.txt").read_text() == "precious"
    run_sweep(config(batch_sizes=(16,), budget=10), out, data=mnist1d_small, overwrite=True)
    assert load_sweep(out).config.budget == 10


def test_a_folder_of_another_format_is_refused_with_what_to_do(mnist1d_small, tmp_path):
    out = tmp_path / "r"
    run_sweep(config(batch_sizes=(16,)), out, data=mnist1d_small)
    stored = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps(dict(stored, format=1)))
    with pytest.raises(jaxsgd.CheckpointError, match="folder format 1.*run the sweep again"):
        load_sweep(out)
    with pytest.raises(FileExistsError, match="folder format 1.*overwrite=True"):
        run_sweep(config(batch_sizes=(16,)), out, data=mnist1d_small)
    run_sweep(config(batch_sizes=(16,)), out, data=mnist1d_small, overwrite=True)
    assert load_sweep(out).metrics.attrs["complete"] == 1


def test_one_pytree_format_for_parameters_and_checkpoints(tmp_path):
    from jaxsgd.engine.folder import CheckpointError, load_tree, save_tree

    tree = {"params": {"Dense_0": {"kernel": np.ones((2, 3), np.float32)}},
            "layers": [np.arange(3), {"b": np.zeros(2, np.int32)}]}
    save_tree(tmp_path / "t.npz", tree, {"batch_size": 16})
    rebuilt, header = load_tree(tmp_path / "t.npz")  # without a template: rebuilt from paths
    assert header["batch_size"] == 16
    assert jax.tree.structure(rebuilt) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    templated, _ = load_tree(tmp_path / "t.npz", template=tree, expected={"batch_size": 16})
    assert jax.tree.structure(templated) == jax.tree.structure(tree)
    with pytest.raises(CheckpointError, match="batch_size is 64 here but 16"):
        load_tree(tmp_path / "t.npz", template=tree, expected={"batch_size": 64})
    with pytest.raises(CheckpointError, match="does not match"):
        load_tree(tmp_path / "t.npz", template={"other": np.ones(1)})


def test_interrupted_sweep_keeps_finished_groups(mnist1d_small, tmp_path, monkeypatch):
    import jaxsgd.engine.sweep as sweep

    real = sweep.run_group

    def dies_on_second_group(sweep_state, batch_size, *args, **kwargs):
        if batch_size == 64:
            raise KeyboardInterrupt
        return real(sweep_state, batch_size, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_group", dies_on_second_group)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config(), tmp_path / "r", data=mnist1d_small)
    partial = load_sweep(tmp_path / "r")
    assert partial.metrics.attrs["complete"] == 0
    assert list(partial.metrics.batch_size.values) == [16]
    assert np.isfinite(partial.metrics.test_loss).all()
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_load_never_unpickles(mnist1d_small, tmp_path, monkeypatch):
    import pickle

    run_sweep(config(batch_sizes=(16,)), tmp_path / "r", data=mnist1d_small)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert load_sweep(tmp_path / "r").metrics.sizes["batch_size"] == 1


# ----------------------------------------------------------------------------- users' structures


def _tuple_mlp():
    """A pure-JAX model whose parameters hold a list of (kernel, bias) tuples."""
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"layers": [(jax.random.normal(k1, (40, 16)) / 8, jnp.zeros(16)),
                           (jax.random.normal(k2, (16, 10)) / 4, jnp.zeros(10))]}

    def apply(params, x):
        (w1, b1), (w2, b2) = params["layers"]
        return jnp.tanh(x @ w1 + b1) @ w2 + b2

    return jaxsgd.Model(init, apply)  # the name has a default


def test_reload_restores_the_users_own_structure(mnist1d_small, tmp_path):
    model = _tuple_mlp()
    c = config(batch_sizes=(16,))
    result = run_sweep(c, tmp_path / "r", data=mnist1d_small, model=model)
    structure = jax.tree.structure(result.params[16])
    plain = load_sweep(tmp_path / "r")  # without the model: dicts and lists
    assert jax.tree.structure(plain.params[16]) != structure
    exact = load_sweep(tmp_path / "r", model=model)
    assert jax.tree.structure(exact.params[16]) == structure
    for a, b in zip(jax.tree.leaves(exact.params[16]), jax.tree.leaves(result.params[16])):
        np.testing.assert_array_equal(a, b)
    one = exact.run_params(16, learning_rate=0.2, seed=0)
    x = jnp.asarray(mnist1d_small.x_test[:4])
    assert model.apply(one, x).shape == (4, 10)  # the model's own apply accepts them
    resumed = run_sweep(c, tmp_path / "r", data=mnist1d_small, model=model)  # loaded, not run
    assert jax.tree.structure(resumed.params[16]) == structure
    with pytest.raises(jaxsgd.CheckpointError, match="does not match"):
        load_sweep(tmp_path / "r", params_like={"w": np.zeros(3, np.float32)})


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_result_files_honour_the_umask(mnist1d_small, tmp_path, umask):
    old = os.umask(umask)
    try:
        run_sweep(config(batch_sizes=(16,)), tmp_path / "r", data=mnist1d_small)
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "r").iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_run_params_names_what_is_missing(mnist1d_small):
    result = run_sweep(config(batch_sizes=(16,)), data=mnist1d_small)
    with pytest.raises(KeyError, match=r"missing \['learning_rate'\]"):
        result.run_params(16, seed=0)
    one_seed = result.run_params(16, learning_rate=0.2)  # a dimension of one value may be left out
    assert jax.tree.structure(one_seed) == jax.tree.structure(result.params[16])
    with pytest.raises(KeyError, match=r"\['lr'\] are not dimensions"):
        result.run_params(16, learning_rate=0.2, seed=0, lr=0.9)
    with pytest.raises(KeyError, match="momentum was not swept; it is 0.9 in every run"):
        result.run_params(16, learning_rate=0.2, seed=0, momentum=0.5)
    same = result.run_params(16, learning_rate=0.2, seed=0, momentum=0.9)  # the unswept value
    assert jax.tree.structure(same) == jax.tree.structure(result.params[16])
    with pytest.raises(KeyError, match="batch_size=32: no parameters"):
        result.run_params(32, learning_rate=0.2, seed=0)


def test_a_grid_scalar_is_a_one_element_list():
    assert Grid(learning_rate=0.1, seed=3) == Grid(learning_rate=(0.1,), seed=(3,))
    assert Grid(learning_rate=np.array([0.1, 0.2])).learning_rate == (0.1, 0.2)
    with pytest.raises(jaxsgd.ConfigError, match="grid.learning_rate: 'x' is not a finite"):
        jaxsgd.validate(SweepConfig(grid=Grid(learning_rate="x")))


def _reload_check(model, mnist1d_small, out):
    result = run_sweep(config(batch_sizes=(16,)), out, data=mnist1d_small, model=model)
    back = load_sweep(out, model=model)
    assert jax.tree.structure(back.params[16]) == jax.tree.structure(result.params[16])
    params = back.run_params(16, learning_rate=0.2, seed=0)
    x, y = jnp.asarray(mnist1d_small.x_test[:8]), jnp.asarray(mnist1d_small.y_test[:8])
    loss_fn = lambda p, batch: cross_entropy(model.apply(p, batch[0]), batch[1])
    expected = loss_fn(jax.tree.map(lambda a: a[1], result.params[16]), (x, y))
    assert float(loss_fn(params, (x, y))) == float(expected)  # run 1: learning rate 0.2


def test_a_flax_nnx_sweep_reloads_into_its_own_state(mnist1d_small, tmp_path):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden, self.out = nnx.Linear(40, 16, rngs=rngs), nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    graphdef = nnx.graphdef(MLP(nnx.Rngs(0)))
    model = jaxsgd.Model(lambda key: nnx.state(MLP(nnx.Rngs(params=key))),
                         lambda state, x: nnx.merge(graphdef, state)(x), "nnx mlp")
    _reload_check(model, mnist1d_small, tmp_path / "r")


def test_an_equinox_sweep_reloads_into_its_own_module(mnist1d_small, tmp_path):
    import equinox as eqx  # in the test extra

    def make(key):
        return eqx.nn.MLP(40, 10, 16, 1, activation=jnp.tanh, key=key)

    static = eqx.partition(make(jax.random.key(0)), eqx.is_array)[1]
    model = jaxsgd.Model(lambda key: eqx.filter(make(key), eqx.is_array),
                         lambda p, x: jax.vmap(eqx.combine(p, static))(x), "equinox mlp")
    _reload_check(model, mnist1d_small, tmp_path / "r")


def test_probe_outputs_of_one_batch_size_on_their_own_step_axis(mnist1d_small):
    c = config(batch_sizes=(16, 64), budget=2**10, budget_unit="examples", eval_every=2**9)
    result = run_sweep(c, data=mnist1d_small, probes=(jaxsgd.gradient_norm(every=4),))
    shared = result.metrics["gradient_norm_grad_norm"]
    assert shared.sizes["gradient_norm_step"] == 16  # the union: 64 steps at B = 16, 16 at 64
    assert np.isnan(shared.sel(batch_size=64).values).mean() > 0.7  # mostly NaN there
    own = result.probe("gradient_norm_grad_norm", 64)
    assert own.dims == ("learning_rate", "seed", "step")
    np.testing.assert_array_equal(own["step"], [0, 4, 8, 12])
    np.testing.assert_array_equal(own["examples"], [0, 256, 512, 768])
    assert not np.isnan(own.values).any()
    np.testing.assert_array_equal(own.sel(step=8).values,
                                  shared.sel(batch_size=64, gradient_norm_step=8).values)
    with pytest.raises(KeyError, match="evaluation metric, not a probe output"):
        result.probe("test_loss", 64)
    with pytest.raises(KeyError, match="probe outputs: gradient_norm_grad_norm"):
        result.probe("grad_norm", 64)
