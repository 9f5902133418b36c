"""Gradient accumulation (``accumulation=k``: k microbatches of B/k per step) equals the large
batch, and Adam's β at a fixed half-life in examples (``horizon_batch_size``)."""

import math

import jax
import numpy as np
import pytest

import jaxsgd
from jaxsgd.engine.training import Group, TrainSpec, optimizer
from jaxsgd.hyperparams import hparams
from jaxsgd.optimizers import fixed_horizon, half_life


@pytest.mark.parametrize("family, rate", [("sgd", 0.1), ("adam", 1e-3)])
def test_four_microbatches_equal_the_large_batch_after_20_steps(mnist1d_small, family, rate):
    config = jaxsgd.SweepConfig(
        data="mnist1d", model="mlp", model_options={"width": 32, "depth": 2}, optimizer=family,
        batch_sizes=(64,), budget=20, budget_unit="steps", eval_every=10,
        grid=jaxsgd.Grid(learning_rate=(rate,), seed=(0, 1)))
    whole = jaxsgd.run_sweep(config, data=mnist1d_small, progress=False)
    parts = jaxsgd.run_sweep(config.replace(accumulation=4), data=mnist1d_small, progress=False)
    for a, b in zip(jax.tree.leaves(whole.params[64]), jax.tree.leaves(parts.params[64])):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))
    np.testing.assert_allclose(parts.metrics.train_loss, whole.metrics.train_loss, rtol=1e-5)
    with pytest.raises(jaxsgd.ConfigError, match="accumulation: 3 microbatches do not divide "
                                                 "batch size 64"):
        jaxsgd.run_sweep(config.replace(accumulation=3), data=mnist1d_small, progress=False)


def test_fixed_horizon_keeps_the_half_life_in_examples():
    hp = hparams(learning_rate=1e-3, b2=0.999, momentum=0.9)
    reference = 64 * math.log(2) / -math.log(0.999)  # 44 339 examples
    assert reference == pytest.approx(44339.2, abs=0.1)
    for b in (1, 8, 64, 1024):
        scaled = fixed_horizon(hp, b, 64, b1=True)
        assert float(half_life(scaled.one_minus_b2, b)) == pytest.approx(reference, rel=1e-5)
        assert float(half_life(1 - scaled.momentum, b)) == pytest.approx(
            64 * math.log(2) / -math.log(0.9), rel=1e-4)
    assert 1 - float(fixed_horizon(hp, 1024, 64).one_minus_b2) == pytest.approx(0.98412, abs=1e-5)
    assert float(fixed_horizon(hp, 1024, 64).momentum) == pytest.approx(0.9)  # β1 kept
    # The training step's optimizer carries the rescaled value.
    spec = TrainSpec(batch_size=8, num_steps=10, num_train=100, num_eval_slots=2,
                     optimizer="adam", horizon_batch_size=64)
    state = optimizer(Group(spec, None, None, None, None), hp).init({"w": np.zeros(3)})
    assert float(state.hyperparams["one_minus_b2"]) == pytest.approx(
        float(fixed_horizon(hp, 8, 64).one_minus_b2), rel=1e-6)
    with pytest.raises(jaxsgd.ConfigError, match="horizon_batch_size: set, but 'sgd'"):
        jaxsgd.validate(jaxsgd.SweepConfig(horizon_batch_size=64))
