"""Snapshots of every run's full state along training (issue 13, item 5)."""

import jax
import numpy as np
import pytest

import jaxsgd
from jaxsgd import Grid, SweepConfig, continue_from, load_sweep, run_sweep

STEPS = (0, 7, 20, 33, 60)  # chosen steps: start, inside chunks, on a chunk boundary, the end
CHUNK = 10
CONFIG = SweepConfig(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                     model_options={"width": 32, "depth": 2}, optimizer="momentum",
                     batch_sizes=(16,), budget=60, budget_unit="steps", eval_every=10,
                     snapshot_points=STEPS,
                     grid=Grid(learning_rate=(0.05, 0.2), momentum=0.9, seed=(0, 1)))


def rel_diff(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


@pytest.fixture(scope="module")
def swept(mnist1d_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("snapshots") / "sweep"
    return run_sweep(CONFIG, out, data=mnist1d_small, chunk_steps=CHUNK, progress=False), out


def test_parameters_at_a_snapshot_equal_a_sweep_that_stops_there(swept, mnist1d_small):
    result, _ = swept
    assert result.snapshot_steps(16) == list(STEPS)
    for t in (7, 20, 33):
        short = run_sweep(CONFIG.replace(budget=t, snapshot_points=(), eval_every=None),
                          data=mnist1d_small, chunk_steps=CHUNK, progress=False)
        for lr in (0.05, 0.2):
            for a, b in zip(jax.tree.leaves(result.run_params(16, step=t, learning_rate=lr,
                                                              seed=1)),
                            jax.tree.leaves(short.run_params(16, learning_rate=lr, seed=1))):
                assert rel_diff(a, b) < 1e-6
    final = result.run_params(16, step=60, learning_rate=0.2, seed=0)
    for a, b in zip(jax.tree.leaves(final),
                    jax.tree.leaves(result.run_params(16, learning_rate=0.2, seed=0))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match=r"no snapshot of batch size 16 there \(have steps "
                                       r"\[0, 7, 20, 33, 60\]"):
        result.run_params(16, step=8, learning_rate=0.2, seed=0)


def test_a_run_continued_from_a_snapshot_equals_the_uninterrupted_run(swept, mnist1d_small):
    result, out = swept
    for source in (result, load_sweep(out)):  # the snapshot read back from the folder too
        continued = continue_from(source, 16, 20, data=mnist1d_small, chunk_steps=CHUNK)
        for a, b in zip(jax.tree.leaves(continued.params[16]), jax.tree.leaves(result.params[16])):
            assert rel_diff(a, b) < 1e-6
        np.testing.assert_allclose(continued.metrics.test_loss, result.metrics.test_loss,
                                   rtol=1e-6)
        assert continued.snapshot_steps(16) == [33, 60]
    with pytest.raises(jaxsgd.ConfigError, match="continue_from: not the sweep's parts"):
        continue_from(result, 16, 20, data=mnist1d_small, probes=(jaxsgd.gradient_norm(),))


def test_a_snapshot_holds_the_whole_state_of_each_run(swept):
    result, out = swept
    state = result.run_state(16, 33, learning_rate=0.05, seed=1)  # read from the folder
    assert set(state) >= {"params", "opt_state", "sampler", "data_key", "evals"}
    files = sorted(p.name for p in out.glob("snapshot_*.npz"))
    assert files == [f"snapshot_bs16_step{t:09d}.npz" for t in STEPS]
    assert not list(out.glob("checkpoint_*"))  # finished: the checkpoint is gone, not these


def test_snapshot_points_follow_the_budget_unit_and_are_validated():
    from jaxsgd.engine.evaluation import snapshot_steps

    config = CONFIG.replace(batch_sizes=(16, 64), budget=2**12, budget_unit="examples",
                            eval_every=2**10, snapshot_points=(100, 1024),
                            snapshot_log_points=3)
    # 100 // 64, 1024 // 64, and log-spaced 16, 256, 4096 examples // 64
    assert list(snapshot_steps(config, 64)) == [0, 1, 4, 16, 64]
    assert list(snapshot_steps(config.replace(snapshot_points=(), snapshot_log_points=0,
                                              snapshot_evaluations=True), 64)) == [0, 16, 32,
                                                                                   48, 64]
    assert SweepConfig.from_dict(config.to_dict()) == config
    with pytest.raises(jaxsgd.ConfigError, match=r"snapshots.points: 5000 is not an integer in "
                                                 r"0..budget"):
        jaxsgd.validate(config.replace(snapshot_points=(5000,)))
