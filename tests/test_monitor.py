"""The minibatch-loss monitor (``jaxsgd.engine.monitor``) on constructed loss sequences, against
the rule evaluated by hand in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsgd.engine.monitor import decay, init_monitor, new_interval, observe, smoothed


def _run(losses, batch_size, horizon=256.0, factor=10.0, spike_factor=3.0, reference=2.3):
    d = decay(batch_size, horizon)

    def step(m, loss):
        m, bad = observe(m, loss, d=d, factor=factor, spike_factor=spike_factor)
        return m, (bad, smoothed(m))

    return jax.lax.scan(step, init_monitor(reference), jnp.asarray(losses, jnp.float32))


def _by_hand(losses, batch_size, horizon=256.0, factor=10.0, reference=2.3):
    d = math.exp(-batch_size / horizon)
    a = w = 0.0
    first_bad, history = None, []
    for t, loss in enumerate(losses):
        a, w = d * a + (1 - d) * loss, d * w + (1 - d)
        history.append(a / w)
        if first_bad is None and (not math.isfinite(loss) or a / w > factor * reference):
            first_bad = t
    return first_bad, np.asarray(history)


def test_one_confidently_wrong_example_does_not_diverge_a_batch_of_one():
    losses = [2.3] * 40 + [25.0] + [2.0] * 40  # one mislabelled example at B = 1
    _, (bad, s) = _run(losses, batch_size=1)
    assert not bool(jnp.any(bad))
    np.testing.assert_allclose(s, _by_hand(losses, 1)[1], rtol=1e-5)
    # The old single-loss rule is the limit B >> horizon: there it does trip, at that step.
    _, (bad, _) = _run(losses, batch_size=4096)
    assert int(jnp.argmax(bad)) == 40


@pytest.mark.parametrize("batch_size", [1, 16, 256, 4096])
def test_an_exploding_loss_diverges_at_the_step_the_rule_gives(batch_size):
    losses = [2.3 * 1.5 ** t for t in range(60)]
    _, (bad, _) = _run(losses, batch_size)
    first, _ = _by_hand(losses, batch_size)
    assert first is not None and int(jnp.argmax(bad)) == first
    losses = [2.3] * 5 + [float("inf")]
    _, (bad, _) = _run(losses, batch_size)
    assert np.flatnonzero(np.asarray(bad)).tolist() == [5]


def test_spikes_and_peak_are_counted_per_interval():
    d = decay(8, 256.0)
    m = init_monitor(2.0)
    losses = [2.0] * 10 + [7.0, 2.0, 5.0] + [2.0] * 10  # 7 > 3·2 is a spike, 5 is not
    for loss in losses:
        m, _ = observe(m, loss, d=d, factor=10.0, spike_factor=3.0)
    assert float(m.spikes) == 1.0 and float(m.peak) == 7.0
    m = new_interval(m)
    assert float(m.spikes) == 0.0 and np.isnan(float(m.peak))
    assert float(smoothed(m)) == pytest.approx(_by_hand(losses, 8)[1][-1], rel=1e-5)
    for loss in (2.0, 9.0, 12.0, 2.0):  # two spikes: 9 > 3·s, then 12 > 3·s (s about 2.7)
        m, _ = observe(m, loss, d=d, factor=10.0, spike_factor=3.0)
    assert float(m.spikes) == 2.0 and float(m.peak) == 12.0


# ------------------------------------------------------------------ outliers and divergence


def test_outliers_are_where_the_options_say_and_nothing_else_changes():
    from jaxsgd.data import DataError, load_dataset

    clean = load_dataset("digits")
    dirty = load_dataset("digits", mislabel=0.02, extreme_inputs=3, extreme_scale=50.0,
                         outlier_seed=7)
    record = dirty.outliers
    wrong, extreme = np.asarray(record["mislabelled"]), np.asarray(record["extreme"])
    assert len(wrong) == round(0.02 * clean.num_train) and len(extreme) == 3
    assert not set(wrong) & set(extreme)
    np.testing.assert_array_equal(clean.y_train[wrong], record["original_labels"])
    np.testing.assert_array_equal(dirty.y_train[wrong], record["labels"])
    assert np.all(dirty.y_train[wrong] != clean.y_train[wrong])
    np.testing.assert_array_equal(dirty.x_train[extreme], clean.x_train[extreme] * 50.0)
    others = np.setdiff1d(np.arange(clean.num_train), np.concatenate([wrong, extreme]))
    np.testing.assert_array_equal(dirty.x_train[others], clean.x_train[others])
    np.testing.assert_array_equal(dirty.y_train[others], clean.y_train[others])
    np.testing.assert_array_equal(dirty.x_test, clean.x_test)
    np.testing.assert_array_equal(dirty.y_test, clean.y_test)
    again = load_dataset("digits", mislabel=0.02, extreme_inputs=3, extreme_scale=50.0,
                         outlier_seed=7)
    assert again.outliers == record  # fixed by the seed
    assert load_dataset("digits", mislabel=0.02, outlier_seed=8).outliers["mislabelled"] != \
        record["mislabelled"]
    for bad, match in ((dict(mislabel=1.5), "mislabel: 1.5 is not a fraction"),
                       (dict(extreme_inputs=-1), "extreme_inputs: -1"),
                       (dict(extreme_scale=0.0), "extreme_scale: 0.0"),
                       (dict(extreme_inputs=10**6), "exceed")):
        with pytest.raises(DataError, match=match):
            load_dataset("digits", **bad)
    with pytest.raises(DataError, match="needs a classification data set"):
        load_dataset("linear_regression", mislabel=0.1)


def _loss_probe():
    """Every step's minibatch loss, as the training step computed it."""
    from jaxsgd.probes.base import Probe

    def measure(loss_fn, params, opt_state, batch, key, step, state, *, gradients):
        return state, {"loss": gradients.loss}

    return Probe(name="minibatch", every=1, init=lambda params, key: (), measure=measure,
                 step_gradients=True)


def test_divergence_in_a_sweep_healthy_small_batches_and_exploding_rates(mnist1d_small):
    """B = 1 meets mislabelled examples (a tight factor of 2.5 makes single losses trip it), and
    an exploding learning rate diverges at every batch size at the step the rule gives."""
    import jaxsgd
    from jaxsgd.data import from_arrays
    from jaxsgd.data.transforms import inject_outliers

    data = inject_outliers(from_arrays(*mnist1d_small[:4], name="mnist1d"), mislabel=0.05,
                           seed=1)
    config = jaxsgd.SweepConfig(
        data="mnist1d", model="mlp", model_options={"width": 32, "depth": 1},
        batch_sizes=(1, 16, 256), budget=80, budget_unit="steps", eval_every=40,
        divergence_factor=2.5, spike_factor=1.5, grid=jaxsgd.Grid(learning_rate=(0.05, 40.0), seed=(0,)))
    result = jaxsgd.run_sweep(config, data=data, probes=(_loss_probe(),), progress=False)
    m = result.metrics
    assert result.provenance["run"]["data"]["outliers"] == data.outliers  # recorded
    healthy = m.sel(learning_rate=0.05, seed=0)
    losses = healthy.minibatch_loss.sel(batch_size=1).values
    assert np.max(losses) > 2.5 * losses[0]  # a single loss at B = 1 would have tripped it
    assert not bool(healthy.diverged.any())
    _, s = _by_hand(losses.tolist(), 1, factor=2.5)
    spikes = np.concatenate([[False], losses[1:] > 1.5 * s[:-1]])
    for slot, (lo, hi) in enumerate(((0, 40), (40, 80)), start=1):  # evaluations at 40 and 80
        at = healthy.sel(batch_size=1).isel(step=slot)
        assert float(at.batch_loss_spikes) == spikes[lo:hi].sum() > 0
        assert float(at.batch_loss_max) == pytest.approx(losses[lo:hi].max(), rel=1e-6)
    for b in (1, 16, 256):
        run = m.sel(learning_rate=40.0, seed=0, batch_size=b)
        first, _ = _by_hand(run.minibatch_loss.values.astype(np.float64).tolist(), b,
                            factor=2.5, reference=float(run.train_loss.isel(step=0)))
        assert bool(run.diverged) and int(run.diverged_step) == first, (b, first)
