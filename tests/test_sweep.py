"""The sweep engine against plain training loops, and its guarantees (issue 2 acceptance)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsgd
from jaxsgd import Grid, SweepConfig, run_sweep
from jaxsgd.losses import cross_entropy, task_for
from jaxsgd.models import make_model
from jaxsgd.hyperparams import hparams
from jaxsgd.engine.sweep import grid_hparams, train_data, train_spec
from jaxsgd.engine.training import initial_params, make_trainer

from _reference import accuracy, plain_sgd_run


def small_config(**changes):
    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options={"width": 32, "depth": 2}, batch_sizes=(16, 64),
                budget=20, budget_unit="steps", eval_every=10,
                grid=Grid(learning_rate=(0.05, 0.2), seed=(0, 1)))
    base.update(changes)
    return SweepConfig(**base)


def rel_diff(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def test_run_out_of_vmapped_sweep_matches_run_alone(mnist1d_small):
    config = small_config()
    result = run_sweep(config, data=mnist1d_small)
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    for batch_size in config.batch_sizes:
        # The same run through the unvmapped trainer ...
        spec = train_spec(config, batch_size, mnist1d_small.num_train)
        task = task_for(10)
        trainer = make_trainer(spec, model.init, model.apply, task.loss, task.metrics)
        data = train_data(config, mnist1d_small)
        hp = hparams(learning_rate=0.2, momentum=0.9)
        state = jax.jit(trainer.init)(hp, 1, initial_params(model.init, 1), data)
        slots = -jnp.ones((20,), jnp.int32)
        state = jax.jit(trainer.advance)(state, hp, data, jnp.arange(20), slots)
        # ... and through a plain optax loop.
        plain, _, _ = plain_sgd_run(model, cross_entropy, mnist1d_small, seed=1,
                                    learning_rate=0.2, batch_size=batch_size, num_steps=20)
        swept = result.run_params(batch_size, learning_rate=0.2, seed=1)
        for leaf_sweep, leaf_alone, leaf_plain in zip(jax.tree.leaves(swept),
                                                      jax.tree.leaves(state.params),
                                                      jax.tree.leaves(plain)):
            assert rel_diff(leaf_sweep, leaf_alone) < 1e-5
            assert rel_diff(leaf_sweep, leaf_plain) < 1e-5


def test_quick_sweep_matches_plain_optax_loop_accuracy(mnist1d_small):
    """2 seeds × 3 learning rates × 3 batch sizes: final test accuracy within 1 point."""
    config = small_config(batch_sizes=(16, 32, 64), budget=2**13, budget_unit="examples",
                          eval_every=2**12, model_options={"width": 64, "depth": 2},
                          grid=Grid(learning_rate=(0.03, 0.1, 0.3), seed=(0, 1)))
    result = run_sweep(config, data=mnist1d_small)
    final = result.metrics.test_accuracy.isel(examples=-1)
    model = make_model("mlp", (40,), 10, width=64, depth=2)
    gaps = []
    for b in config.batch_sizes:
        for lr in config.grid.learning_rate:
            for seed in config.grid.seed:
                params, _, diverged = plain_sgd_run(model, cross_entropy, mnist1d_small, seed, lr,
                                                    b, config.num_steps(b))
                assert diverged == -1
                acc = accuracy(model, params, mnist1d_small.x_test, mnist1d_small.y_test)
                gaps.append(abs(acc - float(final.sel(batch_size=b, learning_rate=lr, seed=seed))))
    assert max(gaps) <= 0.01, gaps
    # and the runs learned something (chance is 10%)
    assert float(final.max()) > 0.4


def test_new_learning_rates_and_seeds_do_not_recompile(mnist1d_small):
    config = small_config()
    run_sweep(config, data=mnist1d_small)  # compiles
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if (
        event == "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        other = config.replace(grid=Grid(learning_rate=(0.01, 0.3), seed=(5, 7)))
        result = run_sweep(other, data=mnist1d_small)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert list(result.metrics.seed.values) == [5, 7]
    # sanity: the listener does see compilations
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run_sweep(config.replace(budget=21), data=mnist1d_small)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) > 0


def test_each_program_compiles_once_and_groups_share_the_last_evaluation(mnist1d_small):
    # compile_ahead compiles a group's programs before it runs, into the cache its calls read:
    # a call that compiled again would show twice. The last evaluation has no batch size in it,
    # so both groups run one finish program. (Shapes no other test uses: every program is new.)
    config = small_config(batch_sizes=(8, 32), budget=2**9 + 2**7, eval_every=2**7,
                          model_options={"width": 24, "depth": 2})
    compiles = []
    listener = lambda event, duration, fun_name="", **kw: compiles.append(fun_name) if (
        event == "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run_sweep(config, data=mnist1d_small, chunk_steps=10)  # 80 steps: 8 spans of 10 at B=8
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    counts = {name: compiles.count(f"jit({name})") for name in ("init_run", "advance", "finish")}
    # B=8: 80 steps in spans of 10; B=32: 20 steps in spans of 10: one advance program each
    assert counts == {"init_run": 2, "advance": 2, "finish": 1}, counts


def test_exploding_run_is_flagged_and_neighbours_are_bitwise_unaffected(mnist1d_small):
    stable = small_config(grid=Grid(learning_rate=(0.05, 0.1, 0.2), seed=(0, 1)), budget=30)
    exploding = stable.replace(grid=Grid(learning_rate=(0.05, 0.1, 40.0), seed=(0, 1)))
    a = run_sweep(stable, data=mnist1d_small).metrics
    b = run_sweep(exploding, data=mnist1d_small).metrics
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    for batch_size in stable.batch_sizes:
        for seed in (0, 1):
            _, losses, expected = plain_sgd_run(model, cross_entropy, mnist1d_small, seed, 40.0,
                                                batch_size, 30)
            assert expected >= 1  # it explodes, but not on the first step
            run = b.sel(batch_size=batch_size, learning_rate=40.0, seed=seed)
            assert bool(run.diverged)
            assert int(run.diverged_step) == expected
            # metrics from the divergence on are NaN, before it they are finite
            steps = run.step.values
            assert np.isnan(run.test_loss.values[steps >= expected]).all()
            assert np.isfinite(run.test_loss.values[steps < expected]).all()
    assert not b.diverged.sel(learning_rate=[0.05, 0.1]).any()
    for name in ("train_loss", "test_loss", "test_accuracy", "batch_loss"):
        np.testing.assert_array_equal(a[name].sel(learning_rate=[0.05, 0.1]).values,
                                      b[name].sel(learning_rate=[0.05, 0.1]).values)


def test_same_seeds_give_identical_results(mnist1d_small):
    config = small_config(sampling="replacement")
    a, b = run_sweep(config, data=mnist1d_small), run_sweep(config, data=mnist1d_small)
    assert a.metrics.identical(b.metrics)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    # and different seeds give different runs
    assert not np.array_equal(a.metrics.test_loss.sel(seed=0), a.metrics.test_loss.sel(seed=1))


def test_steps_to_target_in_sweep_is_first_evaluation_reaching_it(mnist1d_small):
    config = small_config(budget=60, eval_every=5, target_metric="train_loss", target_value=2.0)
    m = run_sweep(config, data=mnist1d_small).metrics
    for b in config.batch_sizes:
        for lr in config.grid.learning_rate:
            for seed in config.grid.seed:
                run = m.sel(batch_size=b, learning_rate=lr, seed=seed)
                hits = run.step.values[run.train_loss.values <= 2.0]
                expected = hits[0] if len(hits) else np.inf
                assert float(run.steps_to_target) == expected
                assert float(run.examples_to_target) == expected * b
    assert np.isfinite(m.steps_to_target).any() and np.isinf(m.steps_to_target).any()


def test_stop_at_target_freezes_each_run_at_its_target_evaluation(mnist1d_small):
    """A stopped run's final parameters are its parameters at the target evaluation: equal to
    the same run trained (unstopped) for exactly steps_to_target steps."""
    config = small_config(budget=60, eval_every=5, target_metric="train_loss", target_value=2.0,
                          stop_at_target=True, batch_sizes=(16,))
    stopped = run_sweep(config, data=mnist1d_small)
    m = stopped.metrics.sel(batch_size=16)
    reached = np.isfinite(m.steps_to_target.values)
    assert reached.any() and (~reached).any()  # some runs stop, some never reach 2.0
    for lr in config.grid.learning_rate:
        for seed in config.grid.seed:
            run = m.sel(learning_rate=lr, seed=seed)
            if np.isfinite(float(run.steps_to_target)):  # flat from the target on
                after = run.step.values >= float(run.steps_to_target)
                np.testing.assert_array_equal(run.train_loss.values[after],
                                              run.train_loss.values[after][0])
            else:
                assert np.all(np.diff(run.train_loss.values) != 0)
    lr, seed = 0.2, 1
    target = int(m.steps_to_target.sel(learning_rate=lr, seed=seed))
    alone = run_sweep(config.replace(stop_at_target=False, budget=target,
                                     grid=Grid(learning_rate=(lr,), seed=(seed,))),
                      data=mnist1d_small)
    for a, b in zip(jax.tree.leaves(stopped.run_params(16, learning_rate=lr, seed=seed)),
                    jax.tree.leaves(alone.run_params(16, learning_rate=lr, seed=seed))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(jaxsgd.ConfigError, match="target.stop"):
        jaxsgd.validate(small_config(stop_at_target=True))


def test_examples_budget_gives_each_batch_size_its_steps(mnist1d_small):
    config = small_config(budget=2**10, budget_unit="examples", eval_every=2**8)
    m = run_sweep(config, data=mnist1d_small).metrics
    assert list(m.examples.values) == [0, 256, 512, 768, 1024]
    np.testing.assert_array_equal(m.step.sel(batch_size=16).values, [0, 16, 32, 48, 64])
    np.testing.assert_array_equal(m.step.sel(batch_size=64).values, [0, 4, 8, 12, 16])
    # batch_loss at the first evaluation has no minibatches yet
    assert np.isnan(m.batch_loss.isel(examples=0)).all()
    assert np.isfinite(m.batch_loss.isel(examples=slice(1, None))).all()


def test_eval_matches_direct_computation_of_final_params(mnist1d_small):
    config = small_config()
    result = run_sweep(config, data=mnist1d_small)
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    params = result.run_params(64, learning_rate=0.05, seed=0)
    acc = accuracy(model, params, mnist1d_small.x_test, mnist1d_small.y_test)
    loss = float(cross_entropy(model.apply(params, mnist1d_small.x_train), mnist1d_small.y_train))
    run = result.metrics.sel(batch_size=64, learning_rate=0.05, seed=0).isel(step=-1)
    assert float(run.test_accuracy) == pytest.approx(acc, abs=1e-6)
    assert float(run.train_loss) == pytest.approx(loss, rel=1e-5)


def test_swept_momentum_becomes_a_dimension(mnist1d_small):
    config = small_config(optimizer="momentum", batch_sizes=(16,),
                          grid=Grid(learning_rate=(0.05,), momentum=(0.0, 0.9), seed=(0,)))
    m = run_sweep(config, data=mnist1d_small).metrics
    assert m.test_loss.dims == ("batch_size", "learning_rate", "momentum", "seed", "step")
    assert "weight_decay" in m.coords and m.weight_decay.ndim == 0
    # momentum 0 with the 'momentum' family is plain SGD: equals the sgd family bitwise
    sgd = run_sweep(small_config(batch_sizes=(16,), grid=Grid(learning_rate=(0.05,), seed=(0,))),
                    data=mnist1d_small).metrics
    np.testing.assert_allclose(m.test_loss.sel(momentum=0.0).values, sgd.test_loss.values,
                               rtol=1e-6)
    assert not np.allclose(m.test_loss.sel(momentum=0.9), m.test_loss.sel(momentum=0.0))


@pytest.mark.parametrize("optimizer", ["nesterov", "adam", "adamw"])
def test_every_optimizer_family_trains(mnist1d_small, optimizer):
    config = small_config(optimizer=optimizer, batch_sizes=(32,), budget=100, eval_every=50,
                          grid=Grid(learning_rate=(1e-3 if "adam" in optimizer else 0.05,),
                                    weight_decay=(0.0, 1e-2), seed=(0,)))
    m = run_sweep(config, data=mnist1d_small).metrics
    first, last = m.train_loss.isel(step=0), m.train_loss.isel(step=-1)
    assert (last < first - 0.1).all()
    assert not np.allclose(m.train_loss.sel(weight_decay=0.0), m.train_loss.sel(weight_decay=1e-2))


def test_grid_hparams_is_the_cartesian_product():
    config = SweepConfig(grid=Grid(learning_rate=(0.1, 0.2, 0.3), momentum=(0.5, 0.9),
                                   seed=(0, 1)), optimizer="momentum")
    hp, seeds = grid_hparams(config)
    assert len(seeds) == 12
    pairs = set(zip(np.round(hp.learning_rate, 6), np.round(hp.momentum, 6), seeds))
    assert len(pairs) == 12
    assert set(hp.learning_rate.tolist()) == set(np.float32([0.1, 0.2, 0.3]).tolist())


def test_adam_b2_and_eps_are_traced_grid_values(mnist1d_small):
    """b2 x eps swept as result dimensions, one program per batch size (new values never
    recompile), each run equal to a plain optax.adam loop with the same values."""
    grid = Grid(learning_rate=(3e-3,), b2=(0.95, 0.999), eps=(1e-8, 1e-3), seed=(0,))
    config = small_config(optimizer="adam", batch_sizes=(16,), grid=grid)
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if (
        event == "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = run_sweep(config, data=mnist1d_small, progress=False)
        first = len(compiles)
        other = grid.__class__(learning_rate=(3e-3,), b2=(0.9, 0.99), eps=(1e-7, 1e-5),
                               seed=(0,))
        again = run_sweep(config.replace(grid=other), data=mnist1d_small, progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first > 0 and len(compiles) == first  # the second grid reuses every program
    assert {"b2", "eps"} <= set(result.metrics.test_loss.dims)
    assert list(again.metrics.b2.values) == [0.9, 0.99]
    model = make_model("mlp", (40,), 10, width=32, depth=2)
    for b2 in grid.b2:
        for eps in grid.eps:
            tx = optax.adam(3e-3, b1=0.9, b2=b2, eps=eps)
            plain, _, _ = plain_sgd_run(model, cross_entropy, mnist1d_small, seed=0,
                                        learning_rate=None, batch_size=16, num_steps=20, tx=tx)
            swept = result.run_params(16, b2=b2, eps=eps, learning_rate=3e-3, seed=0)
            for leaf_sweep, leaf_plain in zip(jax.tree.leaves(swept), jax.tree.leaves(plain)):
                assert rel_diff(leaf_sweep, leaf_plain) < 1e-5
    # the two eps values give different runs: the value reaches the optimizer
    a = result.run_params(16, b2=0.999, eps=1e-8, learning_rate=3e-3, seed=0)
    b = result.run_params(16, b2=0.999, eps=1e-3, learning_rate=3e-3, seed=0)
    assert rel_diff(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0]) > 1e-4


def test_hyperparameter_swept_for_an_optimizer_that_ignores_it_is_refused():
    with pytest.raises(jaxsgd.ConfigError, match=r"grid\.b2.*'momentum' does not use b2"):
        jaxsgd.validate(small_config(optimizer="momentum", grid=Grid(b2=(0.9, 0.99))))
    with pytest.raises(jaxsgd.ConfigError, match=r"grid\.eps: 0\.0 is not positive"):
        jaxsgd.validate(small_config(optimizer="adam", grid=Grid(eps=(0.0,))))


def test_a_published_protocol_from_configuration_equals_the_sweep_built_by_hand(tmp_path):
    """Momentum SGD, He-normal kernels, inputs standardised per feature with training-set
    statistics, a named loss, explicit evaluation points: configured in TOML, and built by
    hand."""
    import flax.linen as nn

    from jaxsgd.cli import read_config_and_probes

    toml = tmp_path / "protocol.toml"
    toml.write_text("""
[data]
name = "digits"
standardize = "per_feature"
[model]
name = "mlp"
width = 32
depth = 1
kernel_init = "he_normal"
[optimizer]
name = "momentum"
[training]
loss = "cross_entropy"
batch_sizes = [16]
budget = 20
budget_unit = "steps"
[evaluation]
points = [3, 7, 12]
[grid]
learning_rate = [0.05, 0.2]
momentum = 0.9
""")
    config, _ = read_config_and_probes(toml)
    configured = run_sweep(config, progress=False)

    raw = jaxsgd.load_dataset("digits")  # by hand: standardise (in float64), build the module
    x_train, x_test = raw.x_train.astype(np.float64), raw.x_test.astype(np.float64)
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    data = jaxsgd.from_arrays((x_train - mean) / std, raw.y_train, (x_test - mean) / std,
                              raw.y_test)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.initializers.he_normal()
            hidden = nn.relu(nn.Dense(32, kernel_init=init)(x))
            return nn.Dense(10, kernel_init=init)(hidden)

    by_hand = run_sweep(config.replace(data="custom", data_options={}), data=data,
                        model=jaxsgd.from_module(Net(), (64,)), progress=False)
    assert list(configured.metrics["step"].values.ravel()) == [0, 3, 7, 12, 20]
    for lr in (0.05, 0.2):
        a = configured.run_params(16, learning_rate=lr, seed=0)
        b = by_hand.run_params(16, learning_rate=lr, seed=0)
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert rel_diff(leaf_a, leaf_b) < 1e-6
    np.testing.assert_allclose(configured.metrics.test_loss, by_hand.metrics.test_loss,
                               rtol=1e-5)


def test_named_mse_loss_on_a_classification_set_equals_one_hot_regression(mnist1d_small):
    config = small_config(batch_sizes=(16,), loss="mse")
    named = run_sweep(config, data=mnist1d_small, progress=False)
    eye = np.eye(10, dtype=np.float32)
    d = mnist1d_small
    one_hot = jaxsgd.from_arrays(d.x_train, eye[d.y_train], d.x_test, eye[d.y_test],
                                 num_classes=0)
    old = run_sweep(config.replace(loss=None), data=one_hot, progress=False)
    for name in ("train_loss", "test_loss", "batch_loss"):
        np.testing.assert_array_equal(named.metrics[name], old.metrics[name])
    for a, b in zip(jax.tree.leaves(named.params[16]), jax.tree.leaves(old.params[16])):
        np.testing.assert_array_equal(a, b)
    assert "test_accuracy" in named.metrics  # still a classification task: accuracy reported
    assert SweepConfig.from_dict(config.to_dict()).loss == "mse"
    with pytest.raises(jaxsgd.ConfigError, match="training.loss: unknown loss 'hinge'"):
        jaxsgd.validate(small_config(loss="hinge"))
    with pytest.raises(jaxsgd.ConfigError, match="'cross_entropy' needs class labels"):
        run_sweep(small_config(loss="cross_entropy"), data=one_hot, progress=False)
