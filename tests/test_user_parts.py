"""A user's own optimizer and loss in a sweep, against plain optax loops (issue 12, item 5)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsgd
from jaxsgd import Grid, SweepConfig, run_sweep
from jaxsgd.models import make_model

from _reference import plain_sgd_run

STEPS = 20
MODEL_OPTIONS = {"width": 16, "depth": 1}


def smoothed_cross_entropy(outputs, labels):
    """A loss jaxsgd does not name: label-smoothed cross-entropy, one value per example."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, outputs.shape[-1]), 0.1)
    return optax.softmax_cross_entropy(outputs, targets)


def lion(hp):
    """An optimizer jaxsgd does not name, reading two traced grid values."""
    return optax.lion(hp.learning_rate, b1=hp.momentum, weight_decay=hp.weight_decay)


def rel_diff(a, b):
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b)))


def config(**changes):
    base = dict(data="mnist1d", data_options={"num_samples": 1000}, model="mlp",
                model_options=MODEL_OPTIONS, batch_sizes=(16,), budget=STEPS,
                budget_unit="steps", eval_every=10, schedule="cosine",
                grid=Grid(learning_rate=(1e-3, 3e-3), momentum=(0.8, 0.9), weight_decay=1e-2,
                          decay=0.1))
    base.update(changes)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def user_sweep(mnist1d_small):
    return run_sweep(config(), data=mnist1d_small, optimizer=lion, loss=smoothed_cross_entropy,
                     probes=[jaxsgd.noise_scale_probe()], progress=False)


def test_user_optimizer_and_loss_equal_plain_optax_loops(user_sweep, mnist1d_small):
    model = make_model("mlp", (40,), 10, **MODEL_OPTIONS)
    mean_loss = lambda o, y: jnp.mean(smoothed_cross_entropy(o, y))  # noqa: E731
    for lr in (1e-3, 3e-3):
        for b1 in (0.8, 0.9):
            # optax's own cosine schedule: jaxsgd's 'cosine' reaches decay × peak at the last step
            schedule = optax.cosine_decay_schedule(lr, STEPS - 1, alpha=0.1)
            tx = optax.lion(schedule, b1=b1, weight_decay=1e-2)
            plain, losses, _ = plain_sgd_run(model, mean_loss, mnist1d_small, 0, lr, 16, STEPS,
                                             tx=tx)
            swept = user_sweep.run_params(16, learning_rate=lr, momentum=b1)
            for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(plain)):
                assert rel_diff(a, b) < 1e-5
            batch_loss = user_sweep.metrics.batch_loss.sel(batch_size=16, learning_rate=lr,
                                                           momentum=b1).values.ravel()
            # batch_loss: the mean minibatch loss between evaluations (steps 0-9, 10-19)
            np.testing.assert_allclose(batch_loss[1:], losses.reshape(2, 10).mean(1), rtol=1e-5)
    assert user_sweep.config.optimizer == "user:lion"
    assert user_sweep.config.loss == "user:smoothed_cross_entropy"
    assert "test_accuracy" in user_sweep.metrics  # a classification set: accuracy reported


def test_noise_probe_reads_the_user_loss(user_sweep, mnist1d_small):
    """At step 0 the probe's per-example and minibatch gradient norms are those of the user's
    loss on the run's first minibatch, computed example by example."""
    model = make_model("mlp", (40,), 10, **MODEL_OPTIONS)
    params = model.init(jax.random.split(jax.random.key(0), 3)[0])
    k_data = jax.random.split(jax.random.key(0), 3)[1]
    idx = jax.random.permutation(jax.random.fold_in(k_data, 0), mnist1d_small.num_train)[:16]
    x, y = jnp.asarray(mnist1d_small.x_train)[idx], jnp.asarray(mnist1d_small.y_train)[idx]

    def loss_fn(p, xb, yb):
        return jnp.mean(smoothed_cross_entropy(model.apply(p, xb), yb))

    def sq_norm(tree):
        return sum(float(np.sum(np.asarray(leaf, np.float64) ** 2)) for leaf in jax.tree.leaves(tree))

    per_example = [sq_norm(jax.grad(loss_fn)(params, x[i:i + 1], y[i:i + 1])) for i in range(16)]
    batch = sq_norm(jax.grad(loss_fn)(params, x, y))
    probe = user_sweep.probe("noise_scale", 16).sel(learning_rate=1e-3, momentum=0.8, seed=0, step=0)
    np.testing.assert_allclose(float(probe.example_sq_norm), np.mean(per_example),
                               rtol=1e-5)
    np.testing.assert_allclose(float(probe.batch_grad_sq_norm), batch, rtol=1e-5)


def test_minima_summary_with_the_user_loss(user_sweep, mnist1d_small):
    """λ_max of the user's loss at every final solution, against the dense Hessian."""
    with pytest.raises(jaxsgd.ConfigError, match="user's own loss 'user:smoothed_cross_entropy'"
                                                 ".*pass it as loss="):
        jaxsgd.minima_summary(user_sweep, mnist1d_small)
    options = jaxsgd.MinimaOptions(num_examples=256, measures=("lambda_max",))
    summary = jaxsgd.minima_summary(user_sweep, mnist1d_small, loss=smoothed_cross_entropy,
                                    options=options)
    model = make_model("mlp", (40,), 10, **MODEL_OPTIONS)
    x, y = jnp.asarray(mnist1d_small.x_train[:256]), jnp.asarray(mnist1d_small.y_train[:256])
    params = user_sweep.run_params(16, learning_rate=3e-3, momentum=0.9)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda v: jnp.mean(smoothed_cross_entropy(
        model.apply(unravel(v), x), y))))(flat)
    top = np.linalg.eigvalsh(np.asarray(hessian, np.float64))[-1]
    got = float(summary.lambda_max.sel(batch_size=16, learning_rate=3e-3, momentum=0.9, seed=0))
    assert abs(got - top) / top < 1e-3, (got, top)


def test_bad_user_parts_fail_before_compiling(mnist1d_small):
    with pytest.raises(jaxsgd.ConfigError, match=r"loss: the user's loss must return one loss "
                                                 r"per example .* got shape \(\)"):
        run_sweep(config(), data=mnist1d_small, optimizer=lion, loss=lambda o, y: jnp.mean(o),
                  progress=False)
    with pytest.raises(jaxsgd.ConfigError, match="must return an optax GradientTransformation, "
                                                 "got float"):
        run_sweep(config(), data=mnist1d_small, optimizer=lambda hp: 0.1, progress=False)
    with pytest.raises(jaxsgd.ConfigError, match="optimizer: expected a factory"):
        run_sweep(config(), data=mnist1d_small, optimizer="lion", progress=False)
    # A configuration that records a user's part needs the part again to train.
    recorded = SweepConfig.from_dict(config(optimizer="user:lion").to_dict())
    with pytest.raises(jaxsgd.ConfigError, match="user's own optimizer 'user:lion'; pass it"):
        run_sweep(recorded, data=mnist1d_small, progress=False)
    with pytest.raises(jaxsgd.ConfigError, match="unknown optimizer 'lion'.*run_sweep"
                                                 r"\(optimizer=\.\.\.\)"):
        jaxsgd.validate(config(optimizer="lion"))


def test_user_optimizer_may_sweep_any_hyperparameter():
    """Which grid values a user's factory reads is its own affair: none is refused as unused."""
    jaxsgd.validate(config(optimizer="user:lion", grid=Grid(b2=(0.9, 0.99), eps=(1e-8, 1e-6))))


def test_hparams_read_a_complement_by_its_name():
    hp = jaxsgd.hparams(b2=0.99)
    assert abs(float(hp.one_minus_b2) - 0.01) < 1e-9
    assert abs(float(hp.b2) - 0.99) < 1e-7
