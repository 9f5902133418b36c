"""Bad input fails fast, with one clear error naming the field and the value (Python API)."""

import numpy as np
import pytest

import jax

from jaxsgd import ConfigError, DataError, Grid, SweepConfig, from_arrays, run_sweep


def config(**changes):
    base = dict(data="digits", batch_sizes=(16,), budget=64, budget_unit="steps",
                grid=Grid(learning_rate=(0.1,), seed=(0,)))
    base.update(changes)
    return SweepConfig(**base)


@pytest.fixture
def no_compile():
    """Fail if anything is compiled: errors must come before compilation."""
    events = []
    listener = lambda event, duration, **kw: events.append(event) if (
        event == "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []


@pytest.mark.parametrize("changes, words", [
    (dict(grid=Grid(learning_rate=(0.1, -0.5))), ["grid.learning_rate", "-0.5"]),
    (dict(eval_points=(5, 99999)), ["evaluation.points", "99999"]),
    (dict(grid=Grid(learning_rate=(0.0,))), ["grid.learning_rate", "0.0"]),
    (dict(grid=Grid(learning_rate=())), ["grid.learning_rate", "empty"]),
    (dict(grid=Grid(seed=())), ["grid.seed", "empty"]),
    (dict(grid=Grid(learning_rate=(float("nan"),))), ["grid.learning_rate", "nan"]),
    (dict(grid=Grid(momentum=(0.5, 0.9))), ["grid.momentum", "sgd"]),
    (dict(grid=Grid(momentum=(1.5,)), optimizer="momentum"), ["grid.momentum", "1.5"]),
    (dict(batch_sizes=(16, 0)), ["training.batch_sizes", "0"]),
    (dict(batch_sizes=(-4,)), ["training.batch_sizes", "-4"]),
    (dict(batch_sizes=()), ["training.batch_sizes", "empty"]),
    (dict(batch_sizes=(5000,)), ["training.batch_sizes", "5000", "1438"]),
    (dict(optimizer="adagrad"), ["optimizer.name", "adagrad"]),
    (dict(schedule="linear"), ["optimizer.schedule", "linear"]),
    (dict(sampling="sequential"), ["training.sampling", "sequential"]),
    (dict(budget=0), ["training.budget", "0"]),
    (dict(budget_unit="epochs"), ["training.budget_unit", "epochs"]),
    (dict(budget=8, budget_unit="examples"), ["training.budget", "16"]),
    (dict(divergence_factor=0.5), ["training.divergence_factor", "0.5"]),
    (dict(target_metric="f1", target_value=0.5), ["target.metric", "f1"]),
    (dict(target_metric="test_error"), ["target.value", "None"]),
    (dict(data="imagenet"), ["imagenet", "mnist1d"]),
    (dict(model="resnet"), ["resnet", "mlp"]),
    (dict(model_options={"widht": 3}), ["widht"]),
    (dict(eval_train_examples=10**6), ["evaluation.train_examples", "1000000"]),
])
def test_invalid_config_raises_before_compiling(changes, words, no_compile):
    with pytest.raises((ConfigError, DataError, ValueError)) as info:
        run_sweep(config(**changes))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_nan_in_data_is_named(no_compile):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(DataError, match="x_train"):
        run_sweep(config(), data=from_arrays(bad, y, x, y))


def test_shape_mismatches_are_named(no_compile):
    x = np.zeros((64, 3), np.float32)
    y = np.zeros((64,), np.int32)
    with pytest.raises(DataError, match="y_train"):
        run_sweep(config(), data=from_arrays(x, y[:60], x, y))
    with pytest.raises(DataError, match="x_test"):
        run_sweep(config(), data=from_arrays(x, y, np.zeros((64, 4), np.float32), y))


def test_regression_task_rejects_accuracy_target(no_compile):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    with pytest.raises(ConfigError, match="target.metric"):
        run_sweep(config(target_metric="test_error", target_value=0.1),
                  data=from_arrays(x, x[:, :1], x, x[:, :1], num_classes=0))


def test_config_from_dict_round_trip_and_errors():
    c = config(optimizer="momentum", grid=Grid(learning_rate=(0.1, 0.3), momentum=(0.0, 0.9)),
               data_options={"test_fraction": 0.3}, target_metric="test_error",
               target_value=0.2)
    assert SweepConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"unknown key training\.batchsize"):
        SweepConfig.from_dict({"training": {"batchsize": 3}})
    with pytest.raises(ConfigError, match=r"training\.budget: expected an integer, got 'big'"):
        SweepConfig.from_dict({"training": {"budget": "big"}})
    with pytest.raises(ConfigError, match=r"unknown section \[trainig\]"):
        SweepConfig.from_dict({"trainig": {}})
    with pytest.raises(ConfigError, match=r"grid\.learning_rate\[1\]: expected a number"):
        SweepConfig.from_dict({"grid": {"learning_rate": [0.1, "x"]}})
