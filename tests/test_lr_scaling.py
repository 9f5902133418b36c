"""Per-batch-size learning rates by a rule (``lr_scaling``): the factor, the configuration,
and a scaled sweep against unscaled sweeps run at the scaled rates by hand."""

import jax
import numpy as np
import pytest

from jaxsgd import Grid, SweepConfig, run_sweep
from jaxsgd.config import ConfigError, validate
from jaxsgd.hyperparams import hparams
from jaxsgd.optimizers import learning_rate_factor, scaled_learning_rate


def test_linear_and_square_root_rules():
    hp = hparams(learning_rate=0.1)
    assert float(scaled_learning_rate(hp, 1024, 256, "linear").learning_rate) == pytest.approx(0.4)
    assert float(scaled_learning_rate(hp, 1024, 256, "sqrt").learning_rate) == pytest.approx(0.2)
    assert float(scaled_learning_rate(hp, 64, 256, "sqrt").learning_rate) == pytest.approx(0.05)
    assert scaled_learning_rate(hp, 1024, 256, "none") is hp
    assert learning_rate_factor(16, 1, "linear") == 16
    with pytest.raises(ValueError, match="rule: 'cubic' is not one of"):
        learning_rate_factor(16, 1, "cubic")


@pytest.mark.parametrize("changes, message", [
    (dict(lr_scaling="cubic"), r"optimizer.lr_scaling: unknown rule 'cubic'"),
    (dict(lr_scaling="linear"), r"optimizer.lr_batch_size: None is not a positive integer"),
    (dict(lr_batch_size=64), r"optimizer.lr_batch_size: 64 given, but optimizer.lr_scaling is "
                             r"'none'"),
    (dict(lr_scaling="sqrt", lr_batch_size=0), r"optimizer.lr_batch_size: 0 is not a positive"),
])
def test_bad_rules_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(SweepConfig(**changes))


def test_rule_round_trips_through_toml():
    c = SweepConfig(lr_scaling="linear", lr_batch_size=1)
    assert c.to_dict()["optimizer"]["lr_scaling"] == "linear"
    assert SweepConfig.from_dict(c.to_dict()) == c
    assert "lr_scaling" not in SweepConfig().to_dict()["optimizer"]


def test_matched_ratio_sweep_equals_sweeps_at_the_scaled_rates(mnist1d_small):
    """ε/B = 0.005 at B = 4 and 16 (lr_batch_size = 1) against plain sweeps at 0.02 and 0.08."""
    base = SweepConfig(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                       model_options={"width": 16, "depth": 1}, optimizer="momentum",
                       budget=20, budget_unit="steps", eval_every=10)
    scaled = run_sweep(base.replace(batch_sizes=(4, 16), lr_scaling="linear", lr_batch_size=1,
                                    grid=Grid(learning_rate=(0.005,), momentum=(0.9,),
                                              seed=(0,))),
                       data=mnist1d_small, progress=False)
    np.testing.assert_allclose(scaled.metrics.learning_rate_used.values.ravel(), [0.02, 0.08])
    for b, lr in ((4, 0.02), (16, 0.08)):
        plain = run_sweep(base.replace(batch_sizes=(b,), grid=Grid(
            learning_rate=(lr,), momentum=(0.9,), seed=(0,))), data=mnist1d_small,
            progress=False)
        for x, y in zip(jax.tree.leaves(scaled.params[b]), jax.tree.leaves(plain.params[b])):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
